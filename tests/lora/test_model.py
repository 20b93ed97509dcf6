import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from nlora_lightning.lora import ContinualLoRAModel, LoRAConfig


def llama(init):
    config = AutoConfig.for_model(**{**init, "vocab_size": 100})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def train_slot(adapters, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapters.layers.values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def test_default_targets_per_family(tiny_llama_init, tiny_t5_init):
    adapters = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2))
    assert sorted({n.rsplit(".", 1)[1] for n in adapters.layers}) == ["q_proj", "v_proj"]
    assert len(adapters.layers) == 2 * tiny_llama_init["num_hidden_layers"]
    t5 = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(**{**tiny_t5_init, "vocab_size": 100}))
    t5_adapters = ContinualLoRAModel(t5, LoRAConfig(r=2))
    # encoder self-attn + decoder self- and cross-attn, q and v each: 2 * (L + 2L)
    assert len(t5_adapters.layers) == 2 * 3 * tiny_t5_init["num_layers"]


def test_unknown_target_module_is_named(tiny_llama_init):
    with pytest.raises(ValueError, match=r"\['qkv'\].*q_proj"):
        ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(target_modules=["q_proj", "qkv"]))


@pytest.mark.parametrize("consolidation", ["lowrank", "merge"])
def test_consolidated_outputs_equal_unconsolidated_sum(tiny_llama_init, consolidation):
    model = llama(tiny_llama_init)
    reference = llama(tiny_llama_init)
    adapters = ContinualLoRAModel(model, LoRAConfig(r=2, alpha=8, dropout=0.0), consolidation=consolidation)
    for task in range(3):
        adapters.reset_slot(task)
        train_slot(adapters, task)
        adapters.snapshot_slot(task)
    adapters.freeze_tasks([0, 1, 2])
    adapters.set_slot_enabled(False)
    # Reference: base model plus each task's update added as a separate dense delta.
    with torch.no_grad():
        for name, layer in adapters.layers.items():
            weight = reference.get_submodule(name).weight
            for task in range(3):
                snap = adapters.snapshots[task]
                weight += snap.scaling * snap.B[name] @ snap.A[name]
    ids = torch.randint(0, 100, (2, 9))
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-5)


def test_snapshots_are_independent_copies_and_state_round_trips(tiny_llama_init):
    adapters = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2))
    adapters.reset_slot(0)
    train_slot(adapters, 0)
    snap = adapters.snapshot_slot(0)
    saved = {k: v.clone() for k, v in snap.B.items()}
    adapters.reset_slot(1)
    train_slot(adapters, 1)
    assert all(torch.equal(saved[k], snap.B[k]) for k in saved)
    adapters.freeze_tasks([0])

    fresh = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2))
    fresh.load_state_dict(adapters.state_dict())
    for name in adapters.layers:
        assert torch.equal(fresh.layers[name].frozen_A, adapters.layers[name].frozen_A)
        assert torch.equal(fresh.layers[name].frozen_B, adapters.layers[name].frozen_B)


def test_state_from_other_shape_is_refused(tiny_llama_init):
    adapters = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2))
    other = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=4))
    with pytest.raises(ValueError, match="do not fit this model"):
        other.load_state_dict(adapters.state_dict())


def test_slot_seed_depends_on_task(tiny_llama_init):
    adapters = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2), seed=3)
    adapters.reset_slot(0)
    first = next(iter(adapters.layers.values())).lora_A.detach().clone()
    adapters.reset_slot(1)
    assert not torch.equal(first, next(iter(adapters.layers.values())).lora_A)
    adapters.reset_slot(0)
    assert torch.equal(first, next(iter(adapters.layers.values())).lora_A)


def test_cumulative_update_factors_give_the_difference(tiny_llama_init):
    adapters = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2))
    train_slot(adapters, 0)
    adapters.snapshot_slot(0)
    train_slot(adapters, 1)
    adapters.snapshot_slot(1)
    name = next(iter(adapters.layers))
    A, B = adapters.update_factors(1, cumulative=True)[name]
    s0, s1 = adapters.snapshots[0], adapters.snapshots[1]
    expected = s1.scaling * (s1.B[name] @ s1.A[name] - s0.B[name] @ s0.A[name])
    torch.testing.assert_close(B @ A, expected)


def test_slot_update_factors_are_the_live_update_and_its_difference_to_a_snapshot(tiny_llama_init):
    adapters = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2, alpha=6))
    train_slot(adapters, 0)
    adapters.snapshot_slot(0)
    train_slot(adapters, 1)
    name, layer = next(iter(adapters.layers.items()))
    live = layer.scaling * (layer.lora_B.detach() @ layer.lora_A.detach())
    assert layer.scaling == 3.0  # alpha / r, not 1: a missing scaling would show
    A, B = adapters.slot_update_factors()[name]
    torch.testing.assert_close(B @ A, live)
    A, B = adapters.slot_update_factors(minus_snapshot=0)[name]
    s0 = adapters.snapshots[0]
    torch.testing.assert_close(B @ A, live - s0.scaling * (s0.B[name] @ s0.A[name]))
    assert not A.requires_grad and not B.requires_grad
    A, B = adapters.slot_update_factors(minus_snapshot=5)[name]  # not stored: the live update alone
    torch.testing.assert_close(B @ A, live)

"""The dense frozen update: same function as the rank-R pair, chosen by cost, invisible to checkpoints."""

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from nlora_lightning.lora import ContinualLoRALinear, ContinualLoRAModel, LoRAConfig


class WrappedLinear(nn.Linear):
    """Stands for a base the layer must not fold an update into (a quantized linear, say)."""


def layer_pair(dtype, d_in=12, d_out=6, rank=7, base_dtype=None, base_class=nn.Linear):
    """Two identical layers holding the same trained slot and frozen pair, one factor form, one dense."""
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out).to(base_dtype or dtype)
    layers = []
    for dense in (False, True):
        layer = ContinualLoRALinear(base_class(d_in, d_out).to(base_dtype or dtype), r=2, alpha=4.0, dropout=0.0)
        layer.base_layer.load_state_dict(base.state_dict())
        layers.append(layer)
    generator = torch.Generator().manual_seed(1)
    A, B = torch.randn(rank, d_in, generator=generator, dtype=dtype), torch.randn(d_out, rank, generator=generator, dtype=dtype)
    slot_B = torch.randn(d_out, 2, generator=generator, dtype=dtype)
    for layer, dense in zip(layers, (False, True)):
        with torch.no_grad():
            layer.lora_A.copy_(layers[0].lora_A)
            layer.lora_B.copy_(slot_B)
        layer.set_frozen(A, B, dense=dense)
    return layers


@pytest.mark.parametrize("base_class", [nn.Linear, WrappedLinear], ids=["folded", "apart"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_and_factor_forms_agree_in_outputs_and_gradients(dtype, base_class):
    factors, dense = layer_pair(dtype, base_class=base_class)
    assert not factors.frozen_is_dense and dense.frozen_is_dense
    assert dense.frozen_delta.dtype == dtype
    results = []
    for layer in (factors, dense):
        x = torch.randn(3, 4, 12, dtype=dtype, generator=torch.Generator().manual_seed(2)).requires_grad_()
        out = layer(x)
        (out * torch.arange(out.numel(), dtype=dtype).reshape(out.shape).cos()).sum().backward()
        results.append((out.detach(), x.grad, layer.lora_A.grad, layer.lora_B.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    expected = factors.base_layer(x.detach()) + x.detach() @ (factors.frozen_B @ factors.frozen_A).T \
        + factors.scaling * x.detach() @ (factors.lora_B @ factors.lora_A).T
    torch.testing.assert_close(results[1][0], expected.detach())


def test_low_precision_base_keeps_the_dense_update_apart_in_fp32():
    factors, dense = layer_pair(torch.float32, base_dtype=torch.bfloat16)
    assert dense.frozen_delta.dtype == torch.float32
    x = torch.randn(5, 12).to(torch.bfloat16)
    torch.testing.assert_close(dense(x), factors(x))


def test_switched_off_frozen_part_ignores_the_dense_update():
    factors, dense = layer_pair(torch.float32)
    factors.frozen_enabled = dense.frozen_enabled = False
    x = torch.randn(5, 12)
    torch.testing.assert_close(dense(x), factors(x))
    torch.testing.assert_close(dense(x), factors.base_layer(x) + factors.scaling * x @ (factors.lora_B @ factors.lora_A).T)


def test_auto_switches_exactly_where_the_dense_update_is_cheaper():
    layer = ContinualLoRALinear(nn.Linear(12, 6), r=2, alpha=4.0)
    # 12 x 6 = 72 multiply-adds per token dense; a rank-R pair costs R * 18: dense pays from R = 5.
    for rank, expected in [(0, False), (1, False), (4, False), (5, True), (30, True)]:
        layer.set_frozen(torch.randn(rank, 12), torch.randn(6, rank))
        assert layer.dense_pays(rank) == (rank * 18 > 72)
        assert layer.frozen_is_dense == expected, rank
    layer.set_frozen(torch.randn(30, 12), torch.randn(6, 30), dense=False)
    assert not layer.frozen_is_dense


# ----- the whole model -------------------------------------------------------------------------
def llama(init):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**init, "vocab_size": 100})).eval()


def trained_tasks(init, count, frozen_form="auto", consolidation="lowrank"):
    adapters = ContinualLoRAModel(llama(init), LoRAConfig(r=2, alpha=8, dropout=0.0), consolidation=consolidation,
                                  frozen_form=frozen_form)
    for task in range(count):
        adapters.reset_slot(task)
        generator = torch.Generator().manual_seed(100 + task)
        with torch.no_grad():
            for layer in adapters.layers.values():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * 0.1)
        adapters.snapshot_slot(task)
    return adapters


def test_model_switches_each_layer_at_its_own_crossover(tiny_llama_init):
    # Tiny LLaMA: q_proj 32 -> 32 (dense pays from R = 17), v_proj 32 -> 16 (from R = 11); r = 2 per task.
    adapters = trained_tasks(tiny_llama_init, 9)
    for tasks, q_dense, v_dense in [(5, False, False), (6, False, True), (8, False, True), (9, True, True)]:
        adapters.freeze_tasks(range(tasks))
        for name, layer in adapters.layers.items():
            assert layer.frozen_rank == 2 * tasks
            assert layer.frozen_is_dense == (q_dense if name.endswith("q_proj") else v_dense), (tasks, name)
    # Regularizers still see the factors, whatever the form.
    assert all(f.previous_A.shape[0] == 18 and f.previous_B.shape[1] == 18 for f in adapters.layer_factors())


@pytest.mark.parametrize("frozen_form", ["dense", "auto"])
def test_dense_model_equals_factor_model_continual_and_per_task(tiny_llama_init, frozen_form):
    dense, factors = trained_tasks(tiny_llama_init, 9, frozen_form), trained_tasks(tiny_llama_init, 9, "factors")
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    for adapters in (dense, factors):
        adapters.activate_all(slot_live=False)
    assert all(layer.frozen_is_dense for layer in dense.layers.values())
    assert not any(layer.frozen_is_dense for layer in factors.layers.values())
    torch.testing.assert_close(dense.model(ids).logits, factors.model(ids).logits, rtol=1e-4, atol=1e-5)
    # Per-task oracle evaluation: one task's rank-2 pair; "auto" takes the factors again.
    for adapters in (dense, factors):
        adapters.activate_only(3, slot_task=None)
    assert all(layer.frozen_is_dense == (frozen_form == "dense") for layer in dense.layers.values())
    torch.testing.assert_close(dense.model(ids).logits, factors.model(ids).logits, rtol=1e-4, atol=1e-5)


def test_checkpoints_do_not_depend_on_the_form_and_merge_keeps_factors_only(tiny_llama_init):
    dense, factors = trained_tasks(tiny_llama_init, 9, "dense"), trained_tasks(tiny_llama_init, 9, "factors")
    dense.activate_all(slot_live=False)
    factors.activate_all(slot_live=False)
    state = dense.state_dict()
    assert state.keys() == factors.state_dict().keys()
    assert not any("delta" in key for key in dense.model.state_dict())
    fresh = ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2, alpha=8, dropout=0.0))
    fresh.load_state_dict(state)
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    assert all(layer.frozen_is_dense for layer in fresh.layers.values())  # "auto" at rank 18
    torch.testing.assert_close(fresh.model(ids).logits, dense.model(ids).logits, rtol=1e-4, atol=1e-5)
    merged = trained_tasks(tiny_llama_init, 9, "dense", consolidation="merge")
    merged.activate_all(slot_live=False)
    assert not any(layer.frozen_is_dense or layer.frozen_enabled for layer in merged.layers.values())
    torch.testing.assert_close(merged.model(ids).logits, factors.model(ids).logits, rtol=1e-4, atol=1e-5)


def test_unknown_frozen_form_is_refused(tiny_llama_init):
    with pytest.raises(ValueError, match="frozen_form must be"):
        ContinualLoRAModel(llama(tiny_llama_init), LoRAConfig(r=2), frozen_form="sparse")

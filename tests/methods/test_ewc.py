"""EWC-LoRA and EWC terms: penalty values against naive forms, online accumulation, checkpoint round trip."""

import io

import pytest
import torch

from nlora_lightning import MethodConfig


def _module(tiny, init, name, adapters):
    module = tiny.module(init, adapters=adapters, methods=[MethodConfig(name, 2.0)])
    module.configure_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_(std=0.1)
    return module


def _random_state(module, seed, kind):
    g = torch.Generator().manual_seed(seed)
    fisher, anchor = {}, {}
    for name, layer in module.adapters.layers.items():
        if kind == "update":
            fisher[name] = torch.rand(layer.out_features, layer.in_features, generator=g)
        else:
            fisher[f"{name}.A"] = torch.rand(layer.lora_A.shape, generator=g)
            fisher[f"{name}.B"] = torch.rand(layer.lora_B.shape, generator=g)
        if kind == "param" or module.adapter_mode == "shared":
            anchor[f"{name}.A"] = torch.randn(layer.lora_A.shape, generator=g)
            anchor[f"{name}.B"] = torch.randn(layer.lora_B.shape, generator=g)
    return fisher, anchor


@pytest.mark.parametrize("adapters", ["per_task", "shared"])
def test_ewc_lora_penalty_matches_naive_form(tiny, tiny_llama_init, adapters):
    module = _module(tiny, tiny_llama_init, "ewc_lora", adapters)
    term = module.method_objects[0]
    assert term.loss(module, {}, None).item() == 0.0  # no finished task yet
    fisher, anchor = _random_state(module, 1, "update")
    term._fold_in(0, fisher, anchor)
    expected = 0.0
    for name, layer in module.adapters.layers.items():
        delta = layer.scaling * layer.lora_B @ layer.lora_A
        if adapters == "shared":
            delta = delta - anchor[f"{name}.B"] @ anchor[f"{name}.A"]
        expected = expected + (fisher[name] * delta.square()).sum()
    torch.testing.assert_close(term.loss(module, {}, None), expected)
    assert module.method_losses({}, None)["ewc_lora"][0] == 2.0


def test_ewc_penalty_matches_naive_form(tiny, tiny_llama_init):
    module = _module(tiny, tiny_llama_init, "ewc", "shared")
    term = module.method_objects[0]
    fisher, anchor = _random_state(module, 2, "param")
    term._fold_in(0, fisher, anchor)
    expected = sum(
        (fisher[f"{n}.{k}"] * (getattr(l, f"lora_{k}") - anchor[f"{n}.{k}"]).square()).sum()
        for n, l in module.adapters.layers.items() for k in "AB"
    )
    torch.testing.assert_close(term.loss(module, {}, None), expected)


def test_importance_accumulates_online_with_gamma(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init, methods=[MethodConfig("ewc_lora", 1.0, options={"gamma": 0.5})])
    term = module.method_objects[0]
    term._fold_in(0, {"x": torch.tensor([4.0])}, {})
    term._fold_in(1, {"x": torch.tensor([1.0])}, {})
    assert term.importance["x"].item() == 0.5 * 4.0 + 1.0 and term.tasks == [0, 1]


def test_fisher_state_survives_a_checkpoint(tiny, tiny_llama_init):
    module = _module(tiny, tiny_llama_init, "ewc_lora", "shared")
    term = module.method_objects[0]
    term._fold_in(0, *_random_state(module, 3, "update"))
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # plain data, as Lightning resumes

    resumed = tiny.module(tiny_llama_init, adapters="shared", methods=[MethodConfig("ewc_lora", 2.0)])
    resumed.on_load_checkpoint(loaded)
    other = resumed.method_objects[0]
    assert other.tasks == term.tasks and set(other.importance) == set(term.importance) and set(other.anchor) == set(term.anchor)
    assert all(torch.equal(other.importance[k], term.importance[k]) for k in term.importance)
    assert all(torch.equal(other.anchor[k], term.anchor[k]) for k in term.anchor)
    with torch.no_grad():  # same slot, same penalty
        for name, layer in resumed.adapters.layers.items():
            layer.lora_A.copy_(module.adapters.layers[name].lora_A)
            layer.lora_B.copy_(module.adapters.layers[name].lora_B)
    torch.testing.assert_close(other.loss(resumed, {}, None), term.loss(module, {}, None))

"""The ELLA term over a module's layers: W_past from the finished tasks' adapters in every consolidation mode."""

import pytest
import torch

from nlora_lightning import MethodConfig


def _randomise_slot(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.3)


@pytest.mark.parametrize("consolidation", ["lowrank", "merge"])
def test_ella_penalises_the_new_update_where_the_past_ones_are_large(tiny, tiny_llama_init, consolidation):
    module = tiny.module(tiny_llama_init, consolidation=consolidation, methods=[MethodConfig("ella", 3.0)])
    module.configure_model()
    assert module.method_losses({}, None)["ella"][1].item() == 0.0  # first task: no past update
    past = {}
    for stage in (0, 1):
        _randomise_slot(module, stage)
        past = {n: past.get(n, 0) + l.scaling * l.lora_B.detach() @ l.lora_A.detach() for n, l in module.adapters.layers.items()}
        module.finish_task(stage)
        module.start_task(stage + 1)
    _randomise_slot(module, 7)
    weight, value = module.method_losses({}, None)["ella"]
    expected = sum(((l.scaling * l.lora_B @ l.lora_A) * past[n]).square().sum() for n, l in module.adapters.layers.items())
    assert weight == 3.0
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0.0)
    value.backward()
    assert all(l.lora_B.grad is not None and l.lora_B.grad.abs().sum() > 0 for l in module.adapters.layers.values())

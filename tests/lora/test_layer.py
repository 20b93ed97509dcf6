import pytest
import torch
from torch import nn

from nlora_lightning.lora import ContinualLoRALinear


def make(d_in=6, d_out=5, r=2, alpha=4.0):
    torch.manual_seed(0)
    return ContinualLoRALinear(nn.Linear(d_in, d_out), r, alpha, dropout=0.0)


def test_fresh_slot_is_identity_update():
    layer = make()
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), layer.base_layer(x))
    assert torch.count_nonzero(layer.lora_B) == 0


def test_forward_adds_scaled_slot_and_frozen_pair():
    layer = make()
    with torch.no_grad():
        layer.lora_B.normal_()
    A_old, B_old = torch.randn(2, 6), torch.randn(5, 2)
    layer.set_frozen(A_old, B_old * 2.0)
    x = torch.randn(4, 6)
    expected = layer.base_layer(x) + x @ (2.0 * B_old @ A_old).T + x @ (layer.scaling * layer.lora_B @ layer.lora_A).T
    torch.testing.assert_close(layer(x), expected)
    layer.slot_enabled = False
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ (2.0 * B_old @ A_old).T)


def test_merge_into_base_equals_frozen_path():
    layer = make()
    A_old, B_old = torch.randn(2, 6), torch.randn(5, 2)
    x = torch.randn(4, 6)
    layer.set_frozen(A_old, B_old)
    layer.slot_enabled = False
    before = layer(x)
    layer.merge_into_base(A_old, B_old)
    layer.frozen_enabled = False
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-6)


def test_rejects_non_linear_and_bad_frozen_shapes():
    with pytest.raises(TypeError, match="linear layers"):
        ContinualLoRALinear(nn.Conv1d(2, 2, 1), 2, 4.0)
    layer = make()
    with pytest.raises(ValueError, match="do not fit"):
        layer.set_frozen(torch.randn(2, 7), torch.randn(5, 2))


def test_seeded_reset_is_reproducible():
    layer = make()
    layer.reset_slot(torch.Generator().manual_seed(5))
    first = layer.lora_A.detach().clone()
    layer.reset_slot(torch.Generator().manual_seed(5))
    assert torch.equal(first, layer.lora_A)

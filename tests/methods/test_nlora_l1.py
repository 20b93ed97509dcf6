"""``nlora_l1`` over several layers of different widths, against a naive per-layer reference."""

import pytest
import torch

from nlora_lightning.lora.model import LayerFactors
from nlora_lightning.methods.nlora_l1 import nlora_l1_penalty as nlora_l1

# (d_out, r, d_in): square, GQA-like (SmolLM2's v_proj is 192 x 576 scaled down), and wide.
SHAPES = [(12, 3, 12), (6, 3, 18), (40, 3, 9)]


def layers_and_leaves(seed=0):
    torch.manual_seed(seed)
    leaves = [(torch.randn(d_out, r, dtype=torch.float64, requires_grad=True),
               torch.randn(r, d_in, dtype=torch.float64, requires_grad=True)) for d_out, r, d_in in SHAPES]
    layers = [LayerFactors(f"layer{i}", A, B, A.new_zeros(0, A.shape[1]), 1.0) for i, (B, A) in enumerate(leaves)]
    return layers, leaves


def naive(leaves, reduction):
    per_layer = [(B @ A).abs() for B, A in leaves]
    return sum(p.mean() if reduction == "mean" else p.sum() for p in per_layer)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("blocked, block_rows", [(True, None), (True, 5), (False, None)])
def test_nlora_l1_reductions_match_naive_values_and_gradients(reduction, blocked, block_rows):
    layers, leaves = layers_and_leaves()
    _, reference_leaves = layers_and_leaves()
    value = nlora_l1(layers, mode="delta_w", blocked=blocked, block_rows=block_rows, reduction=reduction)
    expected = naive(reference_leaves, reduction)
    (3.0 * value).backward()
    (3.0 * expected).backward()
    torch.testing.assert_close(value, expected.float())  # the layers' total is accumulated in fp32
    for (B, A), (B_ref, A_ref) in zip(leaves, reference_leaves):
        torch.testing.assert_close(B.grad, B_ref.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(A.grad, A_ref.grad, rtol=1e-10, atol=1e-12)


def test_mean_is_each_layers_sum_over_its_own_entry_count():
    layers, _ = layers_and_leaves()
    with torch.no_grad():
        per_layer_sums = [nlora_l1([layer]) for layer in layers]
        mean = nlora_l1(layers, reduction="mean")
    expected = sum(s / (d_out * d_in) for s, (d_out, _, d_in) in zip(per_layer_sums, SHAPES))
    torch.testing.assert_close(mean, expected)
    assert nlora_l1(layers).item() == pytest.approx(sum(s.item() for s in per_layer_sums))


def test_mean_lambda_transfers_across_widths_for_a_uniform_update():
    # The same per-entry magnitude at two widths: sum grows with d_out x d_in, mean does not.
    small = LayerFactors("small", torch.ones(1, 8), torch.ones(8, 1), torch.zeros(0, 8), 1.0)
    wide = LayerFactors("wide", torch.ones(1, 64), torch.ones(64, 1), torch.zeros(0, 64), 1.0)
    assert nlora_l1([small], reduction="mean").item() == nlora_l1([wide], reduction="mean").item() == 1.0
    assert nlora_l1([wide]).item() == 64 * nlora_l1([small]).item()


def test_official_mode_has_no_mean_and_an_unknown_reduction_is_refused():
    layers, _ = layers_and_leaves()
    with pytest.raises(ValueError, match="applies to mode='delta_w' only"):
        nlora_l1(layers[:1], mode="official", reduction="mean")
    with pytest.raises(ValueError, match="reduction must be one of"):
        nlora_l1(layers, reduction="max")


def test_the_module_penalises_the_raw_factors_not_the_scaled_update(tiny, tiny_llama_init):
    from nlora_lightning.methods import MethodConfig

    module = tiny.module(tiny_llama_init, methods=[MethodConfig("nlora_l1", 0.1)])  # r=2, alpha=8: scaling 4
    module.configure_model()
    layers = list(module.adapters.layers.values())
    assert all(layer.scaling == 4.0 for layer in layers)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in layers:
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))
    # independent value: every entry of B A, one by one, in float64
    expected = 0.0
    for layer in layers:
        A, B = layer.lora_A.detach().double(), layer.lora_B.detach().double()
        expected += sum(abs(float((B[i] * A[:, j]).sum())) for i in range(B.shape[0]) for j in range(A.shape[1]))
    weight, value = module.method_losses({}, None)["nlora_l1"]
    assert weight == 0.1 and value.item() == pytest.approx(expected, rel=1e-5)

"""The gradient transforms' math against independent naive implementations."""

import math

import pytest
import torch

from nlora_lightning.gradients.functional import l1_normalized, mask_rows, top_magnitude_mask


def naive_quantile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default 'linear' method), by hand."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def naive_mask(values: list[float], top_ratio: float) -> list[bool]:
    threshold = naive_quantile(values, 1.0 - top_ratio)
    return [v >= threshold for v in values]


@pytest.mark.parametrize("units", [1, 2, 4, 7, 64, 129])
@pytest.mark.parametrize("top_ratio", [0.05, 0.3, 0.5, 0.7, 1.0])
def test_top_magnitude_mask_matches_the_naive_quantile_rule(units, top_ratio):
    generator = torch.Generator().manual_seed(units)
    magnitudes = torch.rand(units, generator=generator, dtype=torch.float64) * 10
    expected = naive_mask(magnitudes.tolist(), top_ratio)
    assert top_magnitude_mask(magnitudes, top_ratio).tolist() == expected
    # the kept fraction is the requested one, up to rounding to whole units
    assert abs(sum(expected) - top_ratio * units) <= 1


def test_ties_and_zero_magnitudes_keep_every_unit():
    assert top_magnitude_mask(torch.zeros(8), 0.3).all()  # a fresh B = 0 outputs zeros: nothing is masked
    assert top_magnitude_mask(torch.tensor([1.0, 1.0, 1.0, 0.0]), 0.3).tolist() == [True, True, True, False]


def test_mask_is_invariant_to_l1_normalisation_and_scaling():
    magnitudes = torch.rand(50, generator=torch.Generator().manual_seed(3))
    mask = top_magnitude_mask(magnitudes, 0.3)
    assert torch.equal(top_magnitude_mask(l1_normalized(magnitudes), 0.3), mask)
    assert torch.equal(top_magnitude_mask(magnitudes * 7.5, 0.3), mask)


def test_l1_normalized_matches_naive():
    values = [3.0, 1.0, 0.0, 4.0]
    torch.testing.assert_close(l1_normalized(torch.tensor(values)), torch.tensor([v / sum(values) for v in values]))
    assert torch.equal(l1_normalized(torch.zeros(3)), torch.zeros(3))


def test_mask_rows_matches_a_row_loop():
    grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, True, False, False])
    expected = torch.stack([grad[i] if mask[i] else torch.zeros(3) for i in range(5)])
    torch.testing.assert_close(mask_rows(grad, mask), expected)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan")])
def test_bad_ratio_is_refused(ratio):
    with pytest.raises(ValueError, match="top_ratio"):
        top_magnitude_mask(torch.ones(4), ratio)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="1-D"):
        top_magnitude_mask(torch.ones(2, 2), 0.5)
    with pytest.raises(ValueError, match="does not fit"):
        mask_rows(torch.ones(4, 2), torch.ones(3, dtype=torch.bool))

"""The gradient transforms' math against independent naive implementations."""

import math

import pytest
import torch

from nlora_lightning.gradients.functional import (
    energy_basis,
    expand_basis,
    l1_normalized,
    mask_rows,
    project_out,
    top_magnitude_mask,
)


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


# ----- GORP: subspaces from a first moment, projection -------------------------------------------------


def naive_leading_eigvectors(matrix: torch.Tensor, captured: float, total: float, threshold: float, strict_first: bool):
    """Eigenvectors of M M^T (not an SVD), counted with a plain loop over eigenvalues."""
    values, vectors = torch.linalg.eigh(matrix @ matrix.T)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order].clamp_min(0), vectors[:, order]
    k = 0
    if strict_first:  # first task: count directions whose cumulative share stays below the threshold
        running = 0.0
        for value in values.tolist():
            running += value / total
            if running < threshold:
                k += 1
    else:
        for value in values.tolist():
            if captured >= threshold:
                break
            captured += value / total
            k += 1
    return vectors[:, :k]


def projector(basis):
    return basis @ basis.T


@pytest.mark.parametrize("shape", [(4, 64), (16, 8), (32, 32)])
@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.99])
def test_energy_basis_matches_an_eigendecomposition(shape, threshold):
    moment = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0]), dtype=torch.float64)
    moment[:, :2] *= 10  # a few dominant directions, as first moments have
    basis = energy_basis(moment, threshold)
    expected = naive_leading_eigvectors(moment, 0.0, float(moment.square().sum()), threshold, strict_first=True)
    assert basis.shape == expected.shape
    torch.testing.assert_close(projector(basis.double()), projector(expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1]), atol=1e-5, rtol=0)


def test_one_dominant_direction_gives_an_empty_first_basis():
    moment = torch.outer(torch.randn(6), torch.randn(5)) + 1e-4 * torch.randn(6, 5)
    assert energy_basis(moment, 0.9).shape == (6, 0)  # GPM's strict "< threshold" count


@pytest.mark.parametrize("threshold", [0.6, 0.9])
def test_expand_basis_matches_a_dense_residual_eigendecomposition(threshold):
    generator = torch.Generator().manual_seed(7)
    old = torch.linalg.qr(torch.randn(20, 3, generator=generator, dtype=torch.float64))[0]
    moment = torch.randn(20, 12, generator=generator, dtype=torch.float64)
    moment[:, :3] *= 5
    grown = expand_basis(moment, old, threshold)
    residual = (torch.eye(20, dtype=torch.float64) - old @ old.T) @ moment
    total = float(moment.square().sum())
    captured = 1.0 - float(residual.square().sum()) / total
    new = naive_leading_eigvectors(residual, captured, total, threshold, strict_first=False)
    assert grown.shape == (20, 3 + new.shape[1])
    torch.testing.assert_close(grown[:, :3].double(), old.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(projector(grown.double()), projector(torch.cat([old, new], 1)), atol=1e-4, rtol=0)
    # the grown basis covers at least the threshold of the moment's energy
    covered = float((projector(grown.double()) @ moment).square().sum()) / total
    assert covered >= threshold - 1e-6


def test_expand_basis_stops_at_the_row_dimension():
    full = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0][:, :3]
    assert expand_basis(torch.randn(4, 9), full, 1.0).shape[1] <= 4


def test_project_out_matches_the_dense_projector_and_is_orthogonal():
    generator = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(10, 4, generator=generator))[0]
    grad = torch.randn(10, 6, generator=generator)
    projected = project_out(grad, basis)
    torch.testing.assert_close(projected, (torch.eye(10) - basis @ basis.T) @ grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(basis.T @ projected, torch.zeros(4, 6), atol=1e-5, rtol=0)
    assert project_out(grad, basis[:, :0]) is grad
    with pytest.raises(ValueError, match="does not fit"):
        project_out(grad, torch.zeros(9, 2))


@pytest.mark.parametrize("threshold", [0.0, 1.1])
def test_bad_threshold_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        energy_basis(torch.ones(3, 3), threshold)

"""The gradient transforms' math as pure tensor functions (no modules, no state).

Shapes follow the LoRA convention: ``A`` is r x d_in, ``B`` is d_out x r. A linear layer's *units*
are its output features, i.e. the rows of its weight; a row mask keeps or zeroes a unit's whole
gradient row. A subspace *basis* is a matrix with orthonormal columns in that row space
(d_rows x k); projecting a gradient out of it removes the component ``U U^T G``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["l1_normalized", "top_magnitude_mask", "mask_rows", "energy_basis", "expand_basis", "project_out"]


def l1_normalized(magnitudes: Tensor) -> Tensor:
    """``m / ||m||_1``: MIGU's L1-normalised magnitude distribution over a layer's units.

    A zero vector (a LoRA ``B`` right after its zero initialisation) stays zero.
    """
    total = magnitudes.abs().sum()
    return magnitudes / total if total > 0 else torch.zeros_like(magnitudes)


def top_magnitude_mask(magnitudes: Tensor, top_ratio: float) -> Tensor:
    """Which units receive gradient: those at or above the ``1 - top_ratio`` quantile of the magnitudes.

    This is the released MIGU rule (``activation >= torch.quantile(activation, ini_threshold)`` with
    ``ini_threshold = 1 - top_ratio``, linear interpolation between order statistics). Ties at the
    threshold are all kept, so all-equal magnitudes (e.g. all zero) keep every unit. The rule is
    invariant to positive scaling, so raw sums and L1-normalised magnitudes give the same mask.

    Args:
        magnitudes: One non-negative value per unit (1-D).
        top_ratio: The fraction of units to keep, in (0, 1].

    Returns:
        A boolean tensor shaped like ``magnitudes``.

    Raises:
        ValueError: For a ratio outside (0, 1] or a magnitude tensor that is not 1-D and non-empty.

    Example:
        >>> top_magnitude_mask(torch.tensor([0.1, 0.4, 0.2, 0.3]), 0.5).tolist()
        [False, True, False, True]
    """
    if not 0.0 < top_ratio <= 1.0:
        raise ValueError(f"top_ratio must be in (0, 1], got {top_ratio!r}")
    if magnitudes.dim() != 1 or magnitudes.numel() == 0:
        raise ValueError(f"magnitudes must be a non-empty 1-D tensor, got shape {tuple(magnitudes.shape)}")
    values = magnitudes.detach().float()
    threshold = torch.quantile(values, 1.0 - top_ratio)
    return values >= threshold


def mask_rows(grad: Tensor, mask: Tensor) -> Tensor:
    """``grad`` with the rows (units) where ``mask`` is False set to zero."""
    if mask.shape != grad.shape[:1]:
        raise ValueError(f"a mask of shape {tuple(mask.shape)} does not fit the rows of a {tuple(grad.shape)} gradient")
    return grad * mask.to(grad.dtype).unsqueeze(-1)


def energy_basis(moment: Tensor, threshold: float) -> Tensor:
    """Orthonormal basis of ``moment``'s column space keeping the leading directions below ``threshold`` energy.

    GPM's first-task rule, as in GORP's released-code lineage: with ``U S V^T = svd(M)`` and energy
    fractions ``s_i^2 / sum s^2``, keep the ``k`` directions whose cumulative fraction is still
    ``< threshold`` (strictly: a single direction holding more than ``threshold`` gives ``k = 0``).

    Returns:
        ``U[:, :k]`` (d_rows x k), float32.
    """
    _check_threshold(threshold)
    U, S, _ = torch.linalg.svd(moment.detach().float(), full_matrices=False)
    energy = S.square()
    total = energy.sum()
    if total <= 0:
        return U[:, :0]
    k = int((torch.cumsum(energy / total, dim=0) < threshold).sum())
    return U[:, :k]


def expand_basis(moment: Tensor, basis: Tensor, threshold: float) -> Tensor:
    """Grow ``basis`` by the directions of ``moment`` it misses, until ``threshold`` of its energy is covered.

    GPM's rule for later tasks: the energy already captured is ``1 - ||M - U U^T M||^2 / ||M||^2``;
    directions of the residual are added, largest first, while the captured fraction is below
    ``threshold`` (each addition may overshoot it). The result is cut at ``d_rows`` columns.

    Returns:
        ``[basis, new directions]`` (d_rows x k'), float32.
    """
    _check_threshold(threshold)
    moment = moment.detach().float()
    basis = basis.to(moment)
    if basis.shape[0] != moment.shape[0]:
        raise ValueError(f"a basis with {basis.shape[0]} rows does not fit a {tuple(moment.shape)} moment")
    total = moment.square().sum()
    if total <= 0:
        return basis
    residual = moment - basis @ (basis.T @ moment)
    U, S, _ = torch.linalg.svd(residual, full_matrices=False)
    ratios = S.square() / total
    captured = float(1.0 - residual.square().sum() / total)
    k = 0
    for ratio in ratios.tolist():
        if captured >= threshold:
            break
        captured += ratio
        k += 1
    return torch.cat([basis, U[:, :k]], dim=1)[:, : moment.shape[0]]


def project_out(grad: Tensor, basis: Tensor) -> Tensor:
    """``G - U (U^T G)``: the gradient with its component in the stored subspace removed (no d x d matrix formed)."""
    if basis.shape[0] != grad.shape[0]:
        raise ValueError(f"a basis with {basis.shape[0]} rows does not fit a {tuple(grad.shape)} gradient")
    if basis.shape[1] == 0:
        return grad
    basis = basis.to(device=grad.device, dtype=torch.float32)
    removed = basis @ (basis.T @ grad.float())
    return (grad.float() - removed).to(grad.dtype)


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the energy threshold must be in (0, 1], got {threshold!r}")

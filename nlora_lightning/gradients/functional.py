"""The gradient transforms' math as pure tensor functions (no modules, no state).

Shapes follow the LoRA convention: ``A`` is r x d_in, ``B`` is d_out x r. A linear layer's *units*
are its output features, i.e. the rows of its weight; a row mask keeps or zeroes a unit's whole
gradient row.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["l1_normalized", "top_magnitude_mask", "mask_rows"]


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

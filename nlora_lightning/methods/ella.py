"""ELLA (Biswas et al., EACL 2026): shrink the new update where the earlier tasks' summed update is large."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from nlora_lightning.methods.base import Method, register_method
from nlora_lightning.regularizers import functional as F

__all__ = ["ELLA"]


@register_method("ella")
class ELLA(Method):
    """``sum_layers ||Delta W_t (elementwise) W_past||_F^2``, zero at the first task.

    ``Delta W_t = (alpha / r) B_t A_t`` is the current update as the forward pass applies it and
    ``W_past = previous_B @ previous_A`` the sum of the finished tasks' applied updates (the frozen
    pair, kept as factors in every consolidation mode); row blocks, exact gradients
    (:func:`~nlora_lightning.regularizers.functional.ella_penalty`).

    Args:
        block_rows: Rows per block (default: ~1M entries per block).
    """

    adapters = ("per_task",)
    adapters_reason = "W_past is the sum of the earlier tasks' frozen adapters, and a shared adapter leaves none"

    def __init__(self, block_rows: Optional[int] = None) -> None:
        self.block_rows = block_rows

    def loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        values = []
        for layer in module.adapters.layer_factors():
            if layer.previous_B is None:
                raise ValueError(f"ella needs the finished tasks' B factors; layer {layer.name} has none (LayerFactors.previous_B)")
            values.append(F.ella_penalty(layer.B * layer.scaling, layer.A, layer.previous_B, layer.previous_A, self.block_rows).float())
        return torch.stack(values).sum()

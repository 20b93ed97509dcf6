"""O-LoRA's lambda_2 term: the L2 norms of the new adapter's factors."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nlora_lightning.methods.base import Method, register_method
from nlora_lightning.regularizers import functional as F

__all__ = ["L2"]


@register_method("l2")
class L2(Method):
    """``sum_layers (||A_t||_2 + ||B_t||_2)`` (non-squared; released lambda_2: 0, so off by default in olora.yaml)."""

    label = ""  # a part of O-LoRA, never the run's name

    def loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        layers = module.adapters.layer_factors()
        return torch.stack([F.l2_penalty([l.A, l.B]).float() for l in layers]).sum()

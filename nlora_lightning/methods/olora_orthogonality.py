"""O-LoRA (Wang et al., EMNLP Findings 2023): orthogonality of the new adapter's A to the earlier tasks' A's."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nlora_lightning.methods.base import Method, register_method
from nlora_lightning.regularizers import functional as F

__all__ = ["OLoRAOrthogonality"]


@register_method("olora_orthogonality")
class OLoRAOrthogonality(Method):
    """``sum_layers sum_{i<t} |A_i A_t^T|`` (entrywise); zero at the first task (released lambda_1: 0.5)."""

    label = "olora"

    def loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        layers = module.adapters.layer_factors()
        return torch.stack([F.orthogonality_penalty(l.previous_A, l.A).float() for l in layers]).sum()

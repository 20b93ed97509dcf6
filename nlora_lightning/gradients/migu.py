"""MIGU: magnitude-based gradient updating (Du et al., EMNLP Findings 2024; code wenyudu/MIGU).

In every adapted layer, only the units with the largest output magnitude on the current batch get
gradient. In the LoRA setting the released code hooks the adapter's two linear maps: ``A``'s output
``A x`` (r units) ranks the rows of ``A``, and ``B``'s output ``B A x`` (d_out units) ranks the
rows of ``B``. A unit's magnitude is ``sum over tokens |output|`` (L1-normalising it, as the paper
describes the statistic, does not change the ranking), summed over the micro-batches of one
optimizer step and over data-parallel ranks (the released code averages them: same ranking).
Rows below the ``1 - top_ratio`` quantile get zero gradient; the first task is trained unmasked
(``is_first_task`` in the released scripts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nlora_lightning.gradients.base import GradientTransform, register_gradient_transform
from nlora_lightning.gradients.functional import mask_rows, top_magnitude_mask

if TYPE_CHECKING:
    from nlora_lightning.module import ContinualLightningModule

__all__ = ["MIGU"]


@register_gradient_transform("migu")
class MIGU(GradientTransform):
    """Row masks on the slot's ``A`` and ``B`` gradients from the batch's output magnitudes.

    Args:
        top_ratio: Fraction of units per matrix that receive gradient (released LoRA script:
            ``ini_threshold 0.7``, i.e. the top 30 %).
        skip_first_task: Train the first task without masks, as the released scripts do.

    Raises:
        ValueError: If ``top_ratio`` is not in (0, 1].

    Example:
        >>> MIGU(top_ratio=0.3).top_ratio
        0.3
    """

    def __init__(self, top_ratio: float = 0.3, skip_first_task: bool = True) -> None:
        if isinstance(top_ratio, bool) or not isinstance(top_ratio, (int, float)) or not 0.0 < top_ratio <= 1.0:
            raise ValueError(f"top_ratio must be a number in (0, 1], got {top_ratio!r}")
        if not isinstance(skip_first_task, bool):
            raise ValueError(f"skip_first_task must be true or false, got {skip_first_task!r}")
        self.top_ratio = float(top_ratio)
        self.skip_first_task = skip_first_task

    def attach(self, module: "ContinualLightningModule") -> None:
        for layer in module.adapters.layers.values():
            layer.record_slot_magnitudes = True

    def on_task_end(self, module: "ContinualLightningModule", stage: int) -> None:
        for layer in module.adapters.layers.values():
            layer.pop_slot_magnitudes()  # passes made at a task's end (e.g. a Fisher estimate) must not count for the next task

    def apply(self, module: "ContinualLightningModule") -> dict[str, Any]:
        layers = list(module.adapters.layers.values())
        magnitudes = [layer.pop_slot_magnitudes() for layer in layers]  # popped every step: nothing carries over
        if (self.skip_first_task and module.current_task == 0) or any(m is None for m in magnitudes):
            return {}
        flat = _all_reduce_sum(torch.cat([t for pair in magnitudes for t in pair]))
        kept = total = 0
        offset = 0
        for layer in layers:
            for param in (layer.lora_A, layer.lora_B):
                units = param.shape[0]
                mask = top_magnitude_mask(flat[offset : offset + units], self.top_ratio)
                offset += units
                if param.grad is not None:
                    param.grad.copy_(mask_rows(param.grad, mask))
                kept, total = kept + int(mask.sum()), total + units
        return {"kept_fraction": kept / total}


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over data-parallel ranks (one collective), so every rank masks the same rows of its synced gradients."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(values)
    return values

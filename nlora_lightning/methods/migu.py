"""MIGU: magnitude-based gradient updating (Du et al., EMNLP Findings 2024; code wenyudu/MIGU).

In every adapted layer, only the units with the largest output magnitude on the current batch get
gradient. In the LoRA setting the released code hooks the adapter's two linear maps: ``A``'s output
``A x`` (r units) ranks the rows of ``A``, and ``B``'s output ``B A x`` (d_out units) ranks the
rows of ``B``. A unit's magnitude is ``sum over tokens |output|`` (L1-normalising it, as the paper
describes the statistic, does not change the ranking), summed over the micro-batches of one
optimizer step and over data-parallel ranks (the released code averages them: same ranking).
Rows below the ``1 - top_ratio`` quantile get zero gradient (ties at the quantile are kept, so more
than ``top_ratio`` of the rows can stay); the first task is trained unmasked (``is_first_task`` in
the released scripts). The statistics are recorded by forward hooks this method installs on each
layer's ``slot_hidden`` / ``slot_output`` taps; the LoRA layer itself knows nothing of them.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from nlora_lightning.gradients.functional import mask_rows, top_magnitude_mask
from nlora_lightning.methods.base import Method, TaskBatches, register_method

__all__ = ["MIGU"]


@register_method("migu")
class MIGU(Method):
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

    adds_loss = False

    def __init__(self, top_ratio: float = 0.3, skip_first_task: bool = True) -> None:
        if isinstance(top_ratio, bool) or not isinstance(top_ratio, (int, float)) or not 0.0 < top_ratio <= 1.0:
            raise ValueError(f"top_ratio must be a number in (0, 1], got {top_ratio!r}")
        if not isinstance(skip_first_task, bool):
            raise ValueError(f"skip_first_task must be true or false, got {skip_first_task!r}")
        self.top_ratio = float(top_ratio)
        self.skip_first_task = skip_first_task
        self._magnitudes: dict[int, Tensor] = {}  # id(tap) -> per-unit sum |output| since the last step
        self._taps: list[tuple[Any, Any]] = []  # per layer: (slot_hidden, slot_output)
        self._handles: list[Any] = []

    def _record(self, tap, _args, output: Tensor) -> None:
        # Training forwards only (not evaluation, not no-grad passes such as LwF's teacher).
        if not (tap.training and torch.is_grad_enabled()):
            return
        with torch.no_grad():
            value = output.detach().abs().reshape(-1, output.shape[-1]).sum(0, dtype=torch.float32)
        previous = self._magnitudes.get(id(tap))
        self._magnitudes[id(tap)] = value if previous is None else previous + value

    def attach(self, module: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._taps = [(layer.slot_hidden, layer.slot_output) for layer in module.adapters.layers.values()]
        self._handles = [tap.register_forward_hook(self._record) for pair in self._taps for tap in pair]

    def _pop(self, tap) -> Optional[Tensor]:
        return self._magnitudes.pop(id(tap), None)

    def on_task_end(self, module: Any, stage: int, batches: TaskBatches) -> None:
        self._magnitudes.clear()  # passes made at a task's end (e.g. a Fisher estimate) must not count for the next task

    def before_optimizer_step(self, module: Any) -> dict[str, float]:
        magnitudes = [(self._pop(hidden), self._pop(output)) for hidden, output in self._taps]  # nothing carries over
        if (self.skip_first_task and module.current_task == 0) or any(m is None for pair in magnitudes for m in pair):
            return {}
        flat = _all_reduce_sum(torch.cat([t for pair in magnitudes for t in pair]))
        kept = total = offset = 0
        for layer in module.adapters.layers.values():
            for param in (layer.lora_A, layer.lora_B):
                units = param.shape[0]
                mask = top_magnitude_mask(flat[offset : offset + units], self.top_ratio)
                offset += units
                if param.grad is not None:
                    param.grad.copy_(mask_rows(param.grad, mask))
                kept, total = kept + int(mask.sum()), total + units
        return {"kept_fraction": kept / total}


def _all_reduce_sum(values: Tensor) -> Tensor:
    """Sum over data-parallel ranks (one collective), so every rank masks the same rows of its synced gradients."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(values)
    return values

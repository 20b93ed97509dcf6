"""LwF (Li & Hoiem, 2016) for a causal or seq2seq LM with per-task adapters.

Loss: ``KL(p_old || p_new)`` of the softened next-token distributions at the answer positions
(labels != -100) of the current batch, averaged over those positions. The old model is the same
base with the earlier tasks' adapters only: the trainable slot is switched off for one forward pass
under ``torch.no_grad`` (in eval mode, as Li & Hoiem record the old outputs before training), so no
second model copy is held. The student's logits are the answer logits of the step's own task
forward. Zero at the first task: no earlier adapter exists.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nlora_lightning.methods.base import Method, register_method, zero_loss
from nlora_lightning.regularizers import functional as F

__all__ = ["LwF"]


@register_method("lwf")
class LwF(Method):
    """Learning without Forgetting: distil the model-before-this-task into the current one.

    Args:
        temperature: Softmax temperature of both distributions (Li & Hoiem: 2).

    Raises:
        ValueError: If the temperature is not positive.
    """

    adapters = ("per_task",)
    adapters_reason = ("the old model is the base with the earlier adapters only, obtained by switching the trainable "
                       "slot off; a shared adapter would need a second copy of itself")

    def __init__(self, temperature: float = 2.0) -> None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
            raise ValueError(f"lwf temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def teacher_logits(self, module: Any, batch: dict[str, Tensor]) -> Tensor:
        """Answer logits of the model with the earlier adapters only (no gradient, eval mode)."""
        from nlora_lightning.models.forward import eval_mode  # here: importing the methods must not load transformers

        adapters = module.adapters
        slot_was_enabled = all(layer.slot_enabled for layer in adapters.layers.values())
        adapters.set_slot_enabled(False)
        try:
            with torch.no_grad(), eval_mode(module.model):
                return module.task_forward(batch).logits  # the same forward path as the student's
        finally:
            adapters.set_slot_enabled(slot_was_enabled)

    def loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        if not module.adapters.snapshots:
            return zero_loss(module)
        return F.distillation_kl(out.logits, self.teacher_logits(module, batch), self.temperature)

"""LwF (Li & Hoiem, 2016) for a causal or seq2seq LM with per-task adapters.

Loss term: ``KL(p_old || p_new)`` of the softened next-token distributions at the answer positions
(labels != -100) of the current batch, averaged over those positions. The old model is the same
base with the earlier tasks' adapters only: the trainable slot is switched off for one forward pass
under ``torch.no_grad`` (in eval mode, as Li & Hoiem record the old outputs before training), so no
second model copy is held. The student's logits are the ones of the step's task-loss forward,
captured at the LM head (no extra student pass). Zero at the first task: no earlier adapter exists.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import Tensor

from nlora_lightning.losses.base import LossTerm, register_loss_term, zero_like_module
from nlora_lightning.losses.heads import answer_logits, capture_lm_head, eval_mode
from nlora_lightning.regularizers import functional as F

__all__ = ["LwF"]


@register_loss_term("lwf")
class LwF(LossTerm):
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
        self._student: list[Tensor] = []

    @contextmanager
    def observe(self, module: Any) -> Iterator[None]:
        self._student = []
        with capture_lm_head(module.model, self._student, only_with_grad=True):
            yield

    def teacher_logits(self, module: Any, batch: dict[str, Tensor]) -> Tensor:
        """LM-head output of the model with the earlier adapters only (no gradient, eval mode)."""
        model, adapters = module.model, module.adapters
        captured: list[Tensor] = []
        slot_was_enabled = all(layer.slot_enabled for layer in adapters.layers.values())
        adapters.set_slot_enabled(False)
        try:
            with torch.no_grad(), eval_mode(model), capture_lm_head(model, captured):
                module._task_loss(batch)  # the same forward path as the student's (answer-only head or full logits)
        finally:
            adapters.set_slot_enabled(slot_was_enabled)
        return captured[-1]

    def value(self, module: Any, batch: Optional[dict[str, Tensor]]) -> Tensor:
        student, self._student = self._student, []
        if not module.adapters.snapshots:
            return zero_like_module(module)
        if batch is None:
            raise ValueError("lwf distils on the current batch; call regularization_terms(batch)")
        if not student:
            raise RuntimeError("lwf saw no student forward: compute the task loss inside module.loss_terms.observe(module)")
        labels, seq2seq = batch["labels"], module.is_seq2seq
        teacher = self.teacher_logits(module, batch)
        return F.distillation_kl(answer_logits(student[-1], labels, seq2seq), answer_logits(teacher, labels, seq2seq), self.temperature)

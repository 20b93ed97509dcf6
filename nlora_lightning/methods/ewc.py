"""EWC (Kirkpatrick et al., 2017) on the shared adapter's parameters, with an online Fisher."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nlora_lightning.methods.base import TaskBatches, register_method, zero_loss
from nlora_lightning.methods.fisher import OnlineImportance, slot_fisher
from nlora_lightning.regularizers import functional as F

__all__ = ["EWC"]


@register_method("ewc")
class EWC(OnlineImportance):
    """Plain EWC on the shared adapter's parameters: ``sum omega * (theta - theta*)^2`` over every A and B.

    Only for ``adapters: shared``: with one adapter per task the earlier tasks' parameters are frozen
    (nothing to protect) and the new slot starts from a fresh A, so a distance to the previous task's
    A and B would measure nothing. ``theta*`` are the shared A and B at the previous task's end.

    Args:
        fisher_samples: Training samples of the finished task the Fisher is estimated on (seeded).
        fisher_batch_size: Samples per forward pass of the estimate.
        fisher_per_sample: Square each sample's gradient (the empirical Fisher), or each batch's mean.
        gamma: Decay of earlier tasks' importance (1.0: plain sum over tasks).
    """

    adapters = ("shared",)
    adapters_reason = ("with one adapter per task the earlier tasks' parameters are already frozen; use ewc_lora, "
                       "which penalises the new task's update itself")

    def __init__(self, fisher_samples: int = 64, fisher_batch_size: int = 8, fisher_per_sample: bool = True, gamma: float = 1.0) -> None:
        super().__init__(fisher_samples, fisher_batch_size, fisher_per_sample, gamma)

    @staticmethod
    def _parameters(module: Any) -> dict[str, Tensor]:
        named = {}
        for name, layer in module.adapters.layers.items():
            named[f"{name}.A"] = layer.lora_A
            named[f"{name}.B"] = layer.lora_B
        return named

    def loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        if not self.importance:
            return zero_loss(module)
        named = self._parameters(module)
        names = list(named)
        return F.ewc_penalty(
            [named[n] for n in names],
            [self._device_copy("anchor", n, named[n]) for n in names],
            [self._device_copy("importance", n, named[n]) for n in names],
        )

    def on_task_end(self, module: Any, stage: int, batches: TaskBatches) -> None:
        if stage in self.tasks:
            return
        named = self._parameters(module)
        fisher = slot_fisher(module, batches(self.fisher_samples, self.fisher_batch_size), self.fisher_per_sample)
        self._fold_in(stage, fisher, {n: p.detach().to("cpu", copy=True) for n, p in named.items()})

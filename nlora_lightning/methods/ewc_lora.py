"""EWC-LoRA (Zheng et al., ICLR 2026; code yaoyz96/low-rank-cl): a Fisher over the full update ``Delta W``."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from nlora_lightning.methods.base import TaskBatches, register_method, zero_loss
from nlora_lightning.methods.fisher import OnlineImportance, update_fisher
from nlora_lightning.regularizers import functional as F

__all__ = ["EWCLoRA"]


@register_method("ewc_lora")
class EWCLoRA(OnlineImportance):
    """EWC-LoRA: ``sum_layers sum_ij omega_ij (Delta W - Delta W*)_ij^2`` with a Fisher over the full update.

    ``omega`` (d_out x d_in per layer) accumulates the empirical Fisher of ``dL/dDelta W`` taken at
    each task's end; ``Delta W = (alpha / r) B A`` is the update the forward pass applies. What moves
    from the anchor ``Delta W*``:

    - ``adapters: per_task`` (the release's structure: a "new" LoRA branch reset at each task, the
      earlier ones merged and frozen): the slot's own update, ``Delta W - Delta W* = (alpha / r) B_t A_t``;
    - ``adapters: shared``: the shared adapter's change since the previous task's end,
      ``(alpha / r)(B A - B* A*)``.

    The product is never formed whole (row blocks, exact gradients), but ``omega`` is a full
    d_out x d_in matrix per layer, as in the paper (constant in the number of tasks).

    Args:
        fisher_samples: Training samples of the finished task the Fisher is estimated on (seeded).
        fisher_batch_size: Samples per forward pass of the estimate.
        fisher_per_sample: Square each sample's gradient (the empirical Fisher); ``False`` squares
            each batch's mean gradient, as the release does (weighing samples by answer length).
        gamma: Decay of earlier tasks' importance (the release: 1.0).
        block_rows: Rows per block of the penalty.
    """

    def __init__(self, fisher_samples: int = 64, fisher_batch_size: int = 8, fisher_per_sample: bool = True,
                 gamma: float = 1.0, block_rows: Optional[int] = None) -> None:
        super().__init__(fisher_samples, fisher_batch_size, fisher_per_sample, gamma)
        self.block_rows = block_rows

    def loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        if not self.importance:
            return zero_loss(module)
        values = []
        for name, layer in module.adapters.layers.items():
            B, A = layer.lora_B * layer.scaling, layer.lora_A
            if f"{name}.A" in self.anchor:  # shared adapter: the change since the previous task's end
                B = torch.cat([B, -self._device_copy("anchor", f"{name}.B", B)], dim=1)
                A = torch.cat([A, self._device_copy("anchor", f"{name}.A", A)], dim=0)
            omega = self._device_copy("importance", name, layer.lora_A)
            values.append(F.weighted_squared_product(B, A, omega, self.block_rows))
        return torch.stack(values).sum()

    def on_task_end(self, module: Any, stage: int, batches: TaskBatches) -> None:
        if stage in self.tasks:
            return
        fisher = update_fisher(module, batches(self.fisher_samples, self.fisher_batch_size), self.fisher_per_sample)
        anchor = {}
        if module.adapter_mode == "shared":
            for name, layer in module.adapters.layers.items():
                anchor[f"{name}.A"] = layer.lora_A.detach().to("cpu", copy=True)
                anchor[f"{name}.B"] = (layer.lora_B.detach() * layer.scaling).to("cpu", copy=True)
        self._fold_in(stage, fisher, anchor)

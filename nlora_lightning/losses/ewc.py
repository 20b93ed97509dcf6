"""EWC on LoRA: ``ewc_lora`` (Fisher over the full update, Zheng et al., ICLR 2026) and ``ewc`` (on A and B).

Both keep, across tasks, an importance ``omega`` filled at each task's end (online EWC: ``omega <-
gamma * omega + F_t``, Schwarz et al. 2018, as the EWC-LoRA release does with gamma = 1) and
penalise ``sum omega * (theta - theta*)^2``. State (importance, anchor, tasks folded in) is part of
the module's checkpoint.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from nlora_lightning.losses.base import LossTerm, register_loss_term, zero_like_module
from nlora_lightning.losses.fisher import slot_fisher, task_batches, update_fisher
from nlora_lightning.regularizers import functional as F

__all__ = ["EWC", "EWCLoRA"]


def _check(fisher_samples: int, fisher_batch_size: int, gamma: float) -> None:
    for label, value in (("fisher_samples", fisher_samples), ("fisher_batch_size", fisher_batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma (decay of earlier tasks' importance) must lie in [0, 1], got {gamma!r}")


class _OnlineImportance(LossTerm):
    """Importance and anchor per tensor name, folded in once per finished task."""

    def __init__(self, fisher_samples: int, fisher_batch_size: int, fisher_per_sample: bool, gamma: float) -> None:
        _check(fisher_samples, fisher_batch_size, gamma)
        self.fisher_samples = fisher_samples
        self.fisher_batch_size = fisher_batch_size
        self.fisher_per_sample = bool(fisher_per_sample)
        self.gamma = float(gamma)
        self.importance: dict[str, Tensor] = {}  # CPU, float32
        self.anchor: dict[str, Tensor] = {}  # CPU
        self.tasks: list[int] = []
        self._on_device: dict[str, Tensor] = {}

    def _fold_in(self, stage: int, fisher: dict[str, Tensor], anchor: dict[str, Tensor]) -> None:
        for name, value in fisher.items():
            old = self.importance.get(name)
            self.importance[name] = value if old is None else self.gamma * old + value
        self.anchor = anchor
        self.tasks.append(stage)
        self._on_device = {}

    def _device_copy(self, kind: str, name: str, like: Tensor) -> Tensor:
        """``self.<kind>[name]`` on ``like``'s device and dtype, cached until the state changes."""
        key = f"{kind}:{name}"
        cached = self._on_device.get(key)
        if cached is None or cached.device != like.device:
            cached = self._on_device[key] = getattr(self, kind)[name].to(device=like.device, dtype=like.dtype)
        return cached

    def _batches(self, module: Any, stage: int):
        return task_batches(module, stage, self.fisher_samples, self.fisher_batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"importance": dict(self.importance), "anchor": dict(self.anchor), "tasks": list(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance = dict(state.get("importance", {}))
        self.anchor = dict(state.get("anchor", {}))
        self.tasks = [int(t) for t in state.get("tasks", [])]
        self._on_device = {}


@register_loss_term("ewc_lora")
class EWCLoRA(_OnlineImportance):
    """EWC-LoRA: ``sum_layers sum_ij omega_ij (Delta W - Delta W*)_ij^2`` with a Fisher over the full update.

    ``omega`` (d_out x d_in per layer) accumulates the empirical Fisher of ``dL/dDelta W`` taken at
    each task's end; ``Delta W = (alpha / r) B A`` is the update the forward pass applies. What moves
    from the anchor ``Delta W*``:

    - ``adapters: per_task`` (the release's structure: a "new" LoRA branch reset at each task, the
      earlier ones merged and frozen): the slot's own update, ``Delta W - Delta W* = (alpha / r) B_t A_t``;
    - ``adapters: shared``: the shared adapter's change since the previous task's end,
      ``(alpha / r)(B A - B* A*)``.

    The product is never formed whole (row blocks, exact gradients; see
    :func:`~nlora_lightning.regularizers.functional.weighted_squared_product`), but ``omega`` is a full
    d_out x d_in matrix per layer, as in the paper (constant in the number of tasks).

    Args:
        fisher_samples: Training samples of the finished task the Fisher is estimated on (seeded).
        fisher_batch_size: Samples per forward pass of the estimate.
        fisher_per_sample: Square each sample's gradient (the empirical Fisher); ``False`` squares
            each batch's mean gradient, as the release does (with its training batches).
        gamma: Decay of earlier tasks' importance (the release: 1.0).
        block_rows: Rows per block of the penalty.
    """

    def __init__(self, fisher_samples: int = 64, fisher_batch_size: int = 8, fisher_per_sample: bool = True,
                 gamma: float = 1.0, block_rows: Optional[int] = None) -> None:
        super().__init__(fisher_samples, fisher_batch_size, fisher_per_sample, gamma)
        self.block_rows = block_rows

    def value(self, module: Any, batch: Optional[dict[str, Tensor]]) -> Tensor:
        if not self.importance:
            return zero_like_module(module)
        values = []
        for name, layer in module.adapters.layers.items():
            B, A = layer.lora_B * layer.scaling, layer.lora_A
            if f"{name}.A" in self.anchor:  # shared adapter: the change since the previous task's end
                B = torch.cat([B, -self._device_copy("anchor", f"{name}.B", B)], dim=1)
                A = torch.cat([A, self._device_copy("anchor", f"{name}.A", A)], dim=0)
            omega = self._device_copy("importance", name, layer.lora_A)
            values.append(F.weighted_squared_product(B, A, omega, self.block_rows))
        return torch.stack(values).sum()

    def on_task_end(self, module: Any, stage: int) -> None:
        if stage in self.tasks:
            return
        fisher = update_fisher(module, self._batches(module, stage), self.fisher_per_sample)
        anchor = {}
        if module.adapter_mode == "shared":
            for name, layer in module.adapters.layers.items():
                anchor[f"{name}.A"] = layer.lora_A.detach().to("cpu", copy=True)
                anchor[f"{name}.B"] = (layer.lora_B.detach() * layer.scaling).to("cpu", copy=True)
        self._fold_in(stage, fisher, anchor)


@register_loss_term("ewc")
class EWC(_OnlineImportance):
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

    def value(self, module: Any, batch: Optional[dict[str, Tensor]]) -> Tensor:
        if not self.importance:
            return zero_like_module(module)
        named = self._parameters(module)
        names = list(named)
        return F.ewc_penalty(
            [named[n] for n in names],
            [self._device_copy("anchor", n, named[n]) for n in names],
            [self._device_copy("importance", n, named[n]) for n in names],
        )

    def on_task_end(self, module: Any, stage: int) -> None:
        if stage in self.tasks:
            return
        named = self._parameters(module)
        fisher = slot_fisher(module, self._batches(module, stage), self.fisher_per_sample)
        self._fold_in(stage, fisher, {n: p.detach().to("cpu", copy=True) for n, p in named.items()})

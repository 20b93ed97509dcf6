"""GORP, the LoRA part: gradients projected orthogonally to earlier tasks' first-moment subspaces.

GORP (Wang et al., ACL 2025, arXiv 2507.02503) trains the full-rank weights with GaLore-style
low-rank gradients *and* LoRA, and projects both gradients out of a subspace built, at the end of
each task, from Adam's first moment. The official repository (Wcxwcxw/GORP) holds no code yet; the
rule here follows the implementation in Hoilap/AS-LoRA, built on it: for each projected weight W
(out x in) with first moment M after a task, the left singular vectors of M whose cumulative energy
stays strictly below ``threshold`` (GPM's rule, grown task after task) form a basis U of W's output
space, and every later gradient becomes ``G - U U^T G`` before it enters Adam's moments. The
released scripts project the new adapter's A only (``proj_lora_modules ...loranew_A``). For A
(r x d_in) the output space has r dimensions: once the basis fills them, A gets no gradient at all
(a warning is logged).

Only this LoRA part is implemented: the full-rank GaLore branch (training the base weights through
a rank-128 gradient projection, with its own projection of those gradients) is not, so the frozen
base stays frozen here.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from nlora_lightning.gradients.functional import energy_basis, expand_basis, project_out
from nlora_lightning.methods.base import Method, TaskBatches, register_method

__all__ = ["GORP"]

log = logging.getLogger(__name__)

_FACTORS = ("A", "B")


@register_method("gorp")
class GORP(Method):
    """Project the slot's gradients out of the earlier tasks' first-moment subspaces.

    Args:
        threshold: Fraction of each first moment's energy the subspace must cover (GPM/GORP: 0.9).
        factors: Which slot matrices to project: ``["A"]`` (released scripts), ``["B"]`` or both.

    Raises:
        ValueError: For a threshold outside (0, 1] or an unknown factor name.

    Example:
        >>> GORP(threshold=0.9).factors
        ('A',)
    """

    adds_loss = False

    def __init__(self, threshold: float = 0.9, factors: Sequence[str] = ("A",)) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
        factors = tuple(factors)
        if not factors or any(f not in _FACTORS for f in factors) or len(set(factors)) != len(factors):
            raise ValueError(f"factors must name some of {list(_FACTORS)} once each, got {list(factors)}")
        self.threshold = float(threshold)
        self.factors = factors
        self.bases: dict[str, Tensor] = {}  # "<layer>.<factor>" -> d_rows x k, on the CPU
        self._on_device: dict[str, Tensor] = {}

    def _params(self, module: Any):
        for name, layer in module.adapters.layers.items():
            for factor in self.factors:
                yield f"{name}.{factor}", layer.lora_A if factor == "A" else layer.lora_B

    def before_optimizer_step(self, module: Any) -> dict[str, float]:
        if not self.bases:
            return {}
        dims = []
        for key, param in self._params(module):
            basis = self._device_basis(key, param)
            if basis is None or param.grad is None:
                continue
            param.grad.copy_(project_out(param.grad, basis))
            dims.append(basis.shape[1] / basis.shape[0])
        return {"subspace_fraction": sum(dims) / len(dims)} if dims else {}

    def on_task_end(self, module: Any, stage: int, batches: TaskBatches) -> None:
        trainer = getattr(module, "_trainer", None)
        optimizer = trainer.optimizers[0] if trainer is not None and trainer.optimizers else None
        if optimizer is None:  # the task's optimizer still exists here; none without a trainer
            return
        first = not self.bases  # GPM's first-task rule until any subspace exists, then growth
        full = []
        for key, param in self._params(module):
            moment = optimizer.state.get(param, {}).get("exp_avg")
            if moment is None:  # no step taken for this parameter in this task
                continue
            if first:
                basis = energy_basis(moment, self.threshold)
            else:
                previous = self.bases.get(key, moment.new_zeros(moment.shape[0], 0))
                basis = expand_basis(moment, previous.to(moment.device), self.threshold)
            self.bases[key] = basis.detach().cpu()
            if basis.shape[1] >= basis.shape[0]:
                full.append(key)
        self._on_device.clear()
        if full:
            log.warning("gorp: after task %d the projection basis fills all %d output dimensions of %d matrices (e.g. %s): "
                        "their gradients are projected to zero, so they stop learning", stage,
                        self.bases[full[0]].shape[0], len(full), full[0])

    def _device_basis(self, key: str, param: Tensor) -> Optional[Tensor]:
        basis = self.bases.get(key)
        if basis is None or basis.shape[1] == 0:
            return None
        cached = self._on_device.get(key)
        if cached is None or cached.device != param.device:
            cached = self._on_device[key] = basis.to(device=param.device, dtype=torch.float32)
        return cached

    def state_dict(self) -> dict[str, Any]:
        return {"bases": dict(self.bases)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bases = {k: v.detach().cpu() for k, v in state.get("bases", {}).items()}
        self._on_device.clear()

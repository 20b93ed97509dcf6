"""Declarative regularizer entries: one config entry per term in the loss."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["RegularizerConfig"]


@dataclass
class RegularizerConfig:
    """One regularization term: ``loss += weight_for(task) * regularizer(adapters, **options)``.

    Args:
        name: A registered regularizer (``nlora_l1``, ``olora_orthogonality``, ``l2``, or one
            added with :func:`nlora_lightning.regularizers.register_regularizer`).
        weight: The lambda used for every task without an entry in ``task_weights``.
        task_weights: Per-task lambdas keyed by task name (order 4 of the long benchmark uses two
            values, 0.4 and 1.2).
        options: Keyword arguments of the regularizer (e.g. ``{"mode": "official"}`` for N-LoRA).

    Raises:
        ValueError: If a lambda is negative or not finite.

    Example:
        >>> RegularizerConfig("nlora_l1", weight=0.4, task_weights={"WiC": 1.2}).weight_for("WiC")
        1.2
    """

    name: str
    weight: float = 0.0
    task_weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, value in [("weight", self.weight), *((f"task_weights[{k!r}]", v) for k, v in self.task_weights.items())]:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"regularizer {self.name!r}: {label} (lambda) must be a finite number >= 0, got {value!r}"
                )

    def weight_for(self, task_name: Optional[str]) -> float:
        if task_name is not None and task_name in self.task_weights:
            return float(self.task_weights[task_name])
        return float(self.weight)

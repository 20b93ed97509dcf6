"""Deprecated (one release): ``model.regularizers`` entries; ``model.methods`` takes the same fields (``MethodConfig``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["RegularizerConfig"]


@dataclass
class RegularizerConfig:
    """One regularization term: ``loss += weight_for(task) * regularizer(adapters, **options)``.

    Args:
        name: A registered method (see ``nlora_lightning.methods``).
        weight: The lambda used for every task without an entry in ``task_weights``. ``None``
            takes it from the module's ``method_defaults`` entry of the method's lambda key.
        task_weights: Per-task lambdas keyed by task name (order 4 of the long benchmark uses two
            values, 0.4 and 1.2).
        options: Keyword arguments of the regularizer (e.g. ``{"mode": "official"}`` for N-LoRA).

    Raises:
        ValueError: If a lambda is negative or not finite.

    Example:
        >>> RegularizerConfig('nlora_l1', weight=0.4, task_weights={'WiC': 1.2}).weight_for('WiC')
        1.2
    """

    name: str
    weight: Optional[float] = None
    task_weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        weights = [] if self.weight is None else [("weight", self.weight)]
        for label, value in [*weights, *((f"task_weights[{k!r}]", v) for k, v in self.task_weights.items())]:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"regularizer {self.name!r}: {label} (lambda) must be a finite number >= 0, got {value!r}"
                )

    def weight_for(self, task_name: Optional[str]) -> float:
        if task_name is not None and task_name in self.task_weights:
            return float(self.task_weights[task_name])
        if self.weight is None:
            raise ValueError(f"regularizer {self.name!r} has no weight; set weight or model.regularizer_defaults")
        return float(self.weight)

    def with_defaults(self, defaults: Optional[dict[str, Any]]) -> "RegularizerConfig":
        """Fill a missing weight (and task weights) from ``{"weight": ..., "task_weights": {...}}``."""
        if self.weight is not None or not defaults:
            return self
        return RegularizerConfig(
            self.name,
            weight=defaults.get("weight"),
            task_weights={**defaults.get("task_weights", {}), **self.task_weights},
            options=dict(self.options),
        )

"""Retention of general ability: held-out tasks scored on the base model and after the last task.

Held-out tasks are never trained on. Their score before the first task (the base model) and after
the last one measure how much general ability continual fine-tuning keeps, as TRACE and later
papers report it: per task the change ``final - base``, and their mean ("general ability
retained", negative: lost). Scores are the tasks' own metric (ROUGE-L, exact match, ...), as
fractions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

__all__ = ["retention_summary"]


def retention_summary(base: Mapping[str, Optional[float]], final: Mapping[str, Optional[float]]) -> Optional[dict[str, Any]]:
    """Per held-out task ``{"base", "final", "change"}`` and ``mean_change`` over the tasks with both scores.

    Returns ``None`` when there is no held-out task. A task missing either score has ``change``
    ``None`` and is left out of the mean (``mean_change`` is ``None`` when no task has both).

    Example:
        >>> retention_summary({"a": 0.5, "b": 0.2}, {"a": 0.4, "b": 0.3})["mean_change"]
        0.0
    """
    if not base and not final:
        return None
    tasks: dict[str, dict[str, Optional[float]]] = {}
    changes = []
    for name in list(base) + [n for n in final if n not in base]:
        before, after = _finite(base.get(name)), _finite(final.get(name))
        change = None if before is None or after is None else after - before
        tasks[name] = {"base": before, "final": after, "change": change}
        if change is not None:
            changes.append(change)
    mean = sum(changes) / len(changes) if changes else None
    return {"tasks": tasks, "mean_change": None if mean is None else round(mean, 12)}


def _finite(value: Optional[float]) -> Optional[float]:
    return None if value is None or not math.isfinite(float(value)) else float(value)

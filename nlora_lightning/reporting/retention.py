"""The report's section on retention of general ability (held-out tasks, base model vs after the last task)."""

from __future__ import annotations

from typing import Any, Optional

from nlora_lightning.reporting.runfiles import format_percent

__all__ = ["retention_lines", "retention_mean"]


def retention_mean(metrics: Optional[dict[str, Any]]) -> Optional[float]:
    """The mean change over held-out tasks from ``cl_metrics.json`` (``None``: no held-out tasks)."""
    retention = (metrics or {}).get("retention") or {}
    return retention.get("mean_change")


def retention_lines(metrics: Optional[dict[str, Any]]) -> list[str]:
    """Markdown: per held-out task its score on the base model, after the last task and the change; the mean."""
    retention = (metrics or {}).get("retention")
    if not retention:
        return []
    rows = [[name, format_percent(t.get("base"), 1), format_percent(t.get("final"), 1), format_percent(t.get("change"), 1)]
            for name, t in retention["tasks"].items()]
    lines = ["## Retention of general ability (held-out tasks, %)", "",
             "Never trained on; scored by their own metric on the base model (before the first task) and after the last task.", "",
             "| held-out task | base model | after last task | change |", "|:---|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"General ability retained (mean change): {format_percent(retention.get('mean_change'), 2)}", ""]
    return lines

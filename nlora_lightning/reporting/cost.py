"""The report's cost section and compare's cost columns, from ``run_info.json``'s ``cost`` (CostMonitor)."""

from __future__ import annotations

from typing import Any, Optional

from nlora_lightning.reporting.runfiles import format_number

__all__ = ["cost_figures", "cost_lines", "format_bytes"]


def format_bytes(value: Optional[float]) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``n/a``.

    Example:
        >>> format_bytes(3 * 1024 ** 2)
        '3.0 MiB'
    """
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "n/a"  # pragma: no cover


def cost_figures(run_info: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Headline costs for ``nlora compare``: peak memory, final stored state, train/eval tokens per second."""
    cost = (run_info or {}).get("cost") or {}
    per_task = cost.get("per_task") or []
    return {
        "peak_memory_bytes": cost.get("peak_memory_bytes"),
        "state_bytes": per_task[-1].get("state_bytes") if per_task else None,
        "train_tokens_per_s": cost.get("train_tokens_per_s"),
        "eval_tokens_per_s": cost.get("eval_tokens_per_s"),
        "eval_time_s": cost.get("eval_time_s"),
    }


def cost_lines(run_info: Optional[dict[str, Any]]) -> list[str]:
    """Markdown: the run's totals and one row per task (time, tokens/s, trainable parameters, stored bytes)."""
    cost = (run_info or {}).get("cost")
    if not cost:
        return []
    source = {"cuda_max_memory_allocated": "CUDA allocator peak",
              "process_rss_high_water_mark": "process resident-set high-water mark"}.get(cost.get("peak_memory_source"), "")
    train = f"{format_number(cost.get('train_time_s'), 1)} s ({format_number(cost.get('train_tokens_per_s'), 0)} tokens/s)"
    evaluation = f"{format_number(cost.get('eval_time_s'), 1)} s ({format_number(cost.get('eval_tokens_per_s'), 0)} prompt tokens/s)"
    lines = ["## Cost", "",
             f"Training {train}, evaluation {evaluation}, peak memory {format_bytes(cost.get('peak_memory_bytes'))} ({source}).", "",
             "| after task | train (s) | train tokens/s | eval (s) | eval tokens/s | trainable params | stored state |",
             "|:---|---:|---:|---:|---:|---:|---:|"]
    for entry in cost.get("per_task") or []:
        cells = [entry.get("task", ""), format_number(entry.get("train_time_s"), 1),
                 format_number(entry.get("train_tokens_per_s"), 0),
                 format_number(entry.get("eval_time_s"), 1), format_number(entry.get("eval_tokens_per_s"), 0),
                 format_number(entry.get("trainable_params"), 0), format_bytes(entry.get("state_bytes"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines + [""]

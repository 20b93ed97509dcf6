"""How a run's matrix entries were scored, in words: the metric per task and the multi-reference rule."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["METRIC_TITLES", "matrix_name", "metric_of_run", "scoring_lines"]

METRIC_TITLES = {
    "exact_match": "exact match (after normalisation)",
    "accuracy": "accuracy (exact match against the task's label set)",
    "rougeL": "ROUGE-L F-measure (Porter stemming, torchmetrics = Google's rouge_score)",
}


def metric_of_run(metrics: Optional[dict[str, Any]]) -> str:
    """The run's metric from ``cl_metrics.json``: one name, ``mixed``, or ``exact_match`` for runs written before it was recorded."""
    return (metrics or {}).get("metric") or "exact_match"


def matrix_name(metrics: Optional[dict[str, Any]]) -> str:
    """What the matrix's entries are, for its title: ``Accuracy``, ``ROUGE-L``, or ``Score`` when tasks differ.

    Example:
        >>> matrix_name({"metric": "rougeL"}), matrix_name({}), matrix_name({"metric": "mixed"})
        ('ROUGE-L', 'Accuracy', 'Score')
    """
    return {"exact_match": "Accuracy", "accuracy": "Accuracy", "rougeL": "ROUGE-L"}.get(metric_of_run(metrics), "Score")


def scoring_lines(metrics: Optional[dict[str, Any]]) -> list[str]:
    """Markdown lines naming the metric (per task when mixed) and how several references are scored.

    Example:
        >>> scoring_lines({"metric": "rougeL", "scoring": "best over them"})[0][:26]
        'Scores: ROUGE-L F-measure '
    """
    metric = metric_of_run(metrics)
    if metric == "mixed":
        per_task = (metrics or {}).get("task_metrics") or {}
        text = "Scores per task: " + "; ".join(f"{task}: {METRIC_TITLES.get(m, m)}" for task, m in per_task.items())
    else:
        text = f"Scores: {METRIC_TITLES.get(metric, metric)} per test sample, averaged per task"
    scoring = (metrics or {}).get("scoring")
    return [text + (f" ({scoring})." if scoring else "."), ""]

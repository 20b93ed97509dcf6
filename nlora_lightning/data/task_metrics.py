"""Which metric scores each task: a setting, with a default per task format.

Defaults: ROUGE-L for natural-instructions tasks (SAPT scores all 15 SuperNI tasks by ROUGE-L,
the classification ones included), exact match for CL_Benchmark tasks (the paper's metric).
``data.metric`` sets one metric for every task, ``data.task_metrics`` overrides single tasks.
"""

from __future__ import annotations

from typing import Optional, Sequence

from nlora_lightning.data.benchmark import TaskData
from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.text import LABEL_METRICS, check_metric_name

__all__ = ["DEFAULT_METRICS", "check_metric_options", "resolve_task_metrics"]

DEFAULT_METRICS = {"natural_instructions": "rougeL", "cl_benchmark": "exact_match"}


def check_metric_options(metric: Optional[str], task_metrics: Optional[dict[str, str]], task_names: Sequence[str]) -> None:
    """Known metric names, and ``task_metrics`` keys that are tasks of the run.

    Raises:
        ConfigurationError: Naming the option and the value.
    """
    if metric is not None:
        check_metric_name(metric, "data.metric")
    for task, name in (task_metrics or {}).items():
        if task not in task_names:
            raise ConfigurationError(f"data.task_metrics names task {task!r}, which is not in this run's tasks {list(task_names)}")
        check_metric_name(name, f"data.task_metrics[{task!r}]")


def resolve_task_metrics(tasks: Sequence[TaskData], metric: Optional[str] = None, task_metrics: Optional[dict[str, str]] = None) -> list[str]:
    """The metric of every task, in order.

    Raises:
        ConfigurationError: A metric that needs a label set (``accuracy``) on a task whose
            references are free text.

    Example:
        >>> task = TaskData("t", "G", ["yes", "no"], "Pick.", {})
        >>> resolve_task_metrics([task]), resolve_task_metrics([task], "accuracy")
        (['exact_match'], ['accuracy'])
    """
    check_metric_options(metric, task_metrics, [t.name for t in tasks])
    names = []
    for task in tasks:
        chosen = (task_metrics or {}).get(task.name) or metric or DEFAULT_METRICS[task.format]
        if chosen in LABEL_METRICS and not task.labels:
            option = f"data.task_metrics[{task.name!r}]" if task.name in (task_metrics or {}) else "data.metric"
            raise ConfigurationError(
                f"{option}: metric {chosen!r} cannot apply to task {task.name!r}: its references are free text, with no "
                "label set; use 'rougeL' or 'exact_match' for it (data.task_metrics sets one task's metric)"
            )
        names.append(chosen)
    return names

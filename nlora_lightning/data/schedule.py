"""The stage structure of a sequence and which task columns each moment of a fit evaluates.

Columns are the sequence's tasks ``0..T-1`` followed by the held-out tasks ``T..T+H-1``.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["EVAL_SCHEDULES", "sanity_check_tasks", "stage_end_tasks", "task_stages"]

EVAL_SCHEDULES = ("full", "diagonal_final")


def task_stages(num_tasks: int, joint: bool) -> list[list[int]]:
    """The tasks each stage trains: one per stage in order, or all in a single stage (``joint``).

    Example:
        >>> task_stages(3, joint=False), task_stages(3, joint=True)
        ([[0], [1], [2]], [[0, 1, 2]])
    """
    return [list(range(num_tasks))] if joint else [[task] for task in range(num_tasks)]


def sanity_check_tasks(num_tasks: int, num_held_out: int, zero_shot: bool, retention: bool) -> set[int]:
    """Columns evaluated on the untrained model: the sequence (zero-shot baseline) and the held-out tasks (retention)."""
    tasks = set(range(num_tasks)) if zero_shot else set()
    return tasks | (set(range(num_tasks, num_tasks + num_held_out)) if retention else set())


def stage_end_tasks(stages: Sequence[Sequence[int]], stage: int, eval_schedule: str, evaluate_next: bool,
                    num_held_out: int) -> set[int]:
    """Columns evaluated at the end of ``stage``.

    ``"full"``: every task trained so far; ``"diagonal_final"``: the stage's own tasks only, and
    every task after the last stage. ``evaluate_next`` adds the next stage's tasks (forward
    transfer); the last stage adds the held-out tasks.

    Raises:
        ValueError: For an unknown schedule or a stage outside the sequence.

    Example:
        >>> stages = task_stages(3, joint=False)
        >>> stage_end_tasks(stages, 1, "diagonal_final", True, 1), stage_end_tasks(stages, 2, "diagonal_final", True, 1)
        ({1, 2}, {0, 1, 2, 3})
    """
    if eval_schedule not in EVAL_SCHEDULES:
        raise ValueError(f"eval_schedule must be one of {list(EVAL_SCHEDULES)}, got {eval_schedule!r}")
    if not 0 <= stage < len(stages):
        raise ValueError(f"stage {stage} is outside a sequence of {len(stages)} stage(s)")
    last = stage == len(stages) - 1
    if eval_schedule == "full" or last:
        tasks = {task for trained in stages[: stage + 1] for task in trained}
    else:
        tasks = set(stages[stage])
    if evaluate_next and not last:
        tasks |= set(stages[stage + 1])
    if last:
        num_tasks = sum(map(len, stages))
        tasks |= set(range(num_tasks, num_tasks + num_held_out))
    return tasks

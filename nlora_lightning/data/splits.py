"""Which records of a task's files a run trains and evaluates on: caps, the validation carve-out, seeds.

Rows are positions in the task's files (after records dropped by ``on_unknown_label="drop"``), and
every draw is seeded by the data seed and the task's position in the sequence, so the same settings
give the same rows on every rank and every resume. Training rows come from ``train.json`` minus the
validation rows; evaluation rows come from ``test.json`` or, with ``evaluate_on="validation"``, are
the validation rows themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from nlora_lightning.data.sampling import carve_validation, stratified_subsample
from nlora_lightning.errors import ConfigurationError

__all__ = ["EVALUATION_SPLITS", "TaskRows", "check_validation_room", "select_task_rows"]

EVALUATION_SPLITS = ("test", "validation")
# Seed offsets per draw; the task's position is spread by a prime so tasks never share a draw.
_TRAIN, _TEST, _VALIDATION, _TASK_STRIDE = 0, 1, 2, 7919


@dataclass(frozen=True)
class TaskRows:
    """Rows of one task: ``train`` (positions in train.json; empty for a held-out task) and
    ``evaluation`` (positions in the file of ``evaluation_split``: test.json, or train.json for
    ``"validation"``)."""

    train: list[int]
    evaluation: list[int]
    evaluation_split: str


def check_validation_room(task: str, available: int, validation_samples: Optional[int], max_train_samples: Optional[int],
                          trained: bool = True) -> None:
    """Refuse a validation set that leaves fewer training samples than asked for (at least one).

    Raises:
        ConfigurationError: Naming the task, how many samples its train.json has and the options.
    """
    if validation_samples is None:
        return
    training = (max_train_samples or 1) if trained else 1
    if available < validation_samples + training:
        wanted = f"data.validation_samples={validation_samples}"
        if trained and max_train_samples is not None:
            wanted += f" plus data.max_train_samples={max_train_samples} (disjoint)"
        raise ConfigurationError(f"task {task!r} has {available} samples in train.json, too few for {wanted}; "
                                 "lower data.validation_samples")


def select_task_rows(
    index: int,
    seed: int,
    train_labels: Optional[Sequence[str]],
    test_labels: Optional[Sequence[str]],
    max_train_samples: Optional[int] = None,
    max_eval_samples: Optional[int] = None,
    validation_samples: Optional[int] = None,
    evaluate_on: str = "test",
) -> TaskRows:
    """The rows of task ``index`` (see the module docstring).

    Args:
        train_labels: Labels of train.json, in file order; ``None`` for a held-out task without a
            validation set (its train.json is not needed).
        test_labels: Labels of test.json; ``None`` when evaluating on validation (it is not read).

    Without ``validation_samples`` the training rows are exactly those of a run without the option:
    the same seed draws from the whole file.

    Example:
        >>> rows = select_task_rows(0, 0, ["a", "b"] * 5, None, validation_samples=4, evaluate_on="validation")
        >>> sorted(rows.train + rows.evaluation) == list(range(10)), rows.evaluation_split
        (True, 'validation')
    """
    if evaluate_on not in EVALUATION_SPLITS:
        raise ValueError(f"evaluate_on must be one of {list(EVALUATION_SPLITS)}, got {evaluate_on!r}")
    task_seed = seed + _TASK_STRIDE * index
    validation: list[int] = []
    pool = list(range(len(train_labels))) if train_labels is not None else []
    if validation_samples is not None:
        if train_labels is None:
            raise ValueError("a validation set is carved out of train.json: train_labels are needed")
        validation, pool = carve_validation(train_labels, validation_samples, task_seed + _VALIDATION)
    train: list[int] = []
    if train_labels is not None:
        picks = stratified_subsample([train_labels[i] for i in pool], max_train_samples, task_seed + _TRAIN)
        train = [pool[i] for i in picks]
    if evaluate_on == "validation":
        if validation_samples is None:
            raise ValueError("evaluate_on='validation' needs validation_samples")
        return TaskRows(train, validation, "validation")
    if test_labels is None:
        raise ValueError("evaluate_on='test' needs test_labels")
    return TaskRows(train, stratified_subsample(test_labels, max_eval_samples, task_seed + _TEST), "test")

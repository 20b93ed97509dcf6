"""Continual-learning metrics as pure functions of the accuracy matrix (reference, section 4).

``acc[i, j]`` is the accuracy on task j after training task i (0-based); entries never evaluated
are NaN. Every function returns a 0-d tensor, NaN where the metric is undefined (one task has no
BWT or forgetting); writers turn NaN into JSON ``null``, never into 0.
"""

from __future__ import annotations

import re
import string
from typing import Optional

import torch
from torch import Tensor

__all__ = [
    "normalize_answer",
    "exact_match",
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "forward_transfer",
    "continual_metrics",
]

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_NAN = float("nan")


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, collapse whitespace (articles are kept)."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def _check(acc: Tensor) -> Tensor:
    if acc.dim() != 2:
        raise ValueError(f"the accuracy matrix must be 2-D, got shape {tuple(acc.shape)}")
    return acc.double()


def average_accuracy(acc: Tensor) -> Tensor:
    """AA: mean over tasks of the last row (macro mean, the paper's headline number)."""
    acc = _check(acc)
    return acc[-1].mean()


def own_task_accuracy(acc: Tensor) -> Tensor:
    """Mean over tasks j of ``acc[j, j]``: each task's score right after its own stage, before any
    later task could interfere (plasticity); NaN unless the matrix has one row per task.

    Example:
        >>> own_task_accuracy(torch.tensor([[0.9, float("nan")], [0.7, 0.8]])).item()
        0.85
    """
    acc = _check(acc)
    if acc.shape[0] != acc.shape[1]:
        return acc.new_tensor(_NAN)
    return acc.diagonal().mean()


def backward_transfer(acc: Tensor) -> Tensor:
    """BWT: mean over j < T-1 of ``acc[T-1, j] - acc[j, j]``; NaN for one task."""
    acc = _check(acc)
    T = acc.shape[0]
    if T < 2 or acc.shape[1] < T:
        return acc.new_tensor(_NAN)
    j = torch.arange(T - 1)
    return (acc[T - 1, j] - acc[j, j]).mean()


def forgetting(acc: Tensor) -> Tensor:
    """Mean over j < T-1 of ``max_{i in [j, T-2]} acc[i, j] - acc[T-1, j]``; NaN for one task."""
    acc = _check(acc)
    T = acc.shape[0]
    if T < 2 or acc.shape[1] < T:
        return acc.new_tensor(_NAN)
    drops = [acc[j : T - 1, j].max() - acc[T - 1, j] for j in range(T - 1)]
    return torch.stack(drops).mean()


def forward_transfer(acc: Tensor, zero_shot: Optional[Tensor]) -> Tensor:
    """FWT: mean over j >= 1 of ``acc[j-1, j] - b_j`` with ``b`` the base model's zero-shot accuracy.

    Uses every j whose previous row exists (so it is defined part-way through a sequence too).
    NaN when ``zero_shot`` is None or a needed entry was not evaluated.
    """
    acc = _check(acc)
    rows, cols = acc.shape
    if zero_shot is None or rows < 1 or cols < 2:
        return acc.new_tensor(_NAN)
    b = zero_shot.double()
    j = torch.arange(1, min(rows + 1, cols))
    if j.numel() == 0:
        return acc.new_tensor(_NAN)
    return (acc[j - 1, j] - b[j]).mean()


def continual_metrics(acc: Tensor, zero_shot: Optional[Tensor] = None) -> dict[str, Tensor]:
    """AA, BWT, forgetting and FWT of a (rows x tasks) accuracy matrix.

    For a square matrix (one row per task) all four are defined as in the reference. A matrix with
    fewer rows than tasks after the last row is a multi-task run (one row): only AA applies.

    Example:
        >>> acc = torch.tensor([[0.9, float("nan")], [0.7, 0.8]])
        >>> {k: round(float(v), 3) for k, v in continual_metrics(acc).items() if k != "FWT"}
        {'AA': 0.75, 'BWT': -0.2, 'forgetting': 0.2}
    """
    acc = _check(acc)
    square = acc.shape[0] == acc.shape[1]
    nan = acc.new_tensor(_NAN)
    return {
        "AA": average_accuracy(acc),
        "BWT": backward_transfer(acc) if square else nan,
        "forgetting": forgetting(acc) if square else nan,
        "FWT": forward_transfer(acc, zero_shot) if square else nan,
    }

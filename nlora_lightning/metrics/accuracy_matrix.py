"""A torchmetrics ``Metric`` holding the accuracy matrix, reduced across DDP ranks."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["AccuracyMatrix"]


class AccuracyMatrix(Metric):
    """Counts of correct and evaluated samples per (row, task); ``compute`` gives accuracies.

    Rows are evaluation points (one per training stage, plus any extra rows a caller reserves, e.g.
    the zero-shot baseline); columns are tasks. Entries never evaluated come out NaN.

    Args:
        num_rows: Evaluation points.
        num_tasks: Tasks (columns).

    Example:
        >>> metric = AccuracyMatrix(2, 2)
        >>> metric.update(0, 0, correct=9, total=10)
        >>> metric.compute()[0, 0].item()
        0.9
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_rows: int, num_tasks: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_rows <= 0 or num_tasks <= 0:
            raise ValueError(f"AccuracyMatrix needs positive sizes, got {num_rows} x {num_tasks}")
        self.add_state("correct", torch.zeros(num_rows, num_tasks, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_rows, num_tasks, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, row: int, task: int, correct: int | Tensor, total: int | Tensor) -> None:  # type: ignore[override]
        self.correct[row, task] += torch.as_tensor(correct, dtype=torch.float64, device=self.correct.device)
        self.total[row, task] += torch.as_tensor(total, dtype=torch.float64, device=self.total.device)

    def compute(self) -> Tensor:
        acc = self.correct / self.total
        return torch.where(self.total > 0, acc, torch.full_like(acc, float("nan")))

"""Metrics: pure functions of the accuracy matrix, and a thin DDP-aware ``Metric``."""

from nlora_lightning.metrics.accuracy_matrix import AccuracyMatrix
from nlora_lightning.metrics.functional import (
    average_accuracy,
    backward_transfer,
    continual_metrics,
    exact_match,
    forgetting,
    forward_transfer,
    normalize_answer,
)

__all__ = [
    "AccuracyMatrix",
    "average_accuracy",
    "backward_transfer",
    "continual_metrics",
    "exact_match",
    "forgetting",
    "forward_transfer",
    "normalize_answer",
]

"""Metrics: pure functions of the accuracy matrix, and a thin DDP-aware ``Metric``."""

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


def __getattr__(name: str):
    # AccuracyMatrix needs torchmetrics (which imports transformers when installed): loaded on first use,
    # so the pure functions import with torch alone.
    if name == "AccuracyMatrix":
        from nlora_lightning.metrics.accuracy_matrix import AccuracyMatrix

        return AccuracyMatrix
    raise AttributeError(f"module 'nlora_lightning.metrics' has no attribute {name!r}")

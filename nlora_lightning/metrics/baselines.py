"""Trivial baselines of a task and the "never learned" test, as pure functions.

A run's score on a task means little without what a model that learned nothing would score:

- **chance**: ``1 / number of labels``, the expected accuracy of a uniform guess over the label
  set (classification only; ``None`` for free-text tasks);
- **majority**: the score on the test set of always giving the most frequent *training* answer
  (for classification the majority class; for generation tasks the most frequent training output,
  scored with the task's own metric, e.g. ROUGE-L). The functions take the scoring function, so
  they work for any per-sample metric.

A task is **never learned** when the score right after its own training is not above its majority
score beyond the sampling noise of the test set: the lower end of the 95 % percentile bootstrap
interval of the own-stage score (test samples resampled) is at or below the majority score.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from nlora_lightning.metrics.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, percentile_interval, resampled_accuracies
from nlora_lightning.metrics.functional import exact_match

__all__ = [
    "ScoreFunction",
    "baseline_average",
    "chance_score",
    "constant_answer_scores",
    "exact_match_score",
    "majority_baseline",
    "most_frequent_answer",
    "never_learned",
]

ScoreFunction = Callable[[str, str], float]
"""``score(prediction, reference)`` of one sample, in [0, 1]."""


def exact_match_score(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0 (the classification tasks' metric)."""
    return float(exact_match(prediction, reference))


def chance_score(num_labels: int) -> float:
    """Expected accuracy of a uniform guess over ``num_labels`` labels.

    Raises:
        ValueError: For fewer than one label.

    Example:
        >>> chance_score(4)
        0.25
    """
    if num_labels < 1:
        raise ValueError(f"chance needs at least one label, got {num_labels}")
    return 1.0 / num_labels


def most_frequent_answer(train_answers: Sequence[str]) -> str:
    """The most frequent training answer; a tie goes to the answer first in sorted order (deterministic).

    Raises:
        ValueError: For no training answers.

    Example:
        >>> most_frequent_answer(["b", "a", "b", "a", "c"])
        'a'
    """
    if not train_answers:
        raise ValueError("the majority baseline needs at least one training answer")
    counts = Counter(train_answers)
    return min(counts, key=lambda answer: (-counts[answer], answer))


def constant_answer_scores(answer: str, references: Sequence[str], score: ScoreFunction = exact_match_score) -> Tensor:
    """Per-sample scores (float64) of answering ``answer`` to every test sample with gold ``references``."""
    return torch.tensor([float(score(answer, reference)) for reference in references], dtype=torch.float64)


def majority_baseline(train_answers: Sequence[str], test_references: Sequence[str],
                      score: ScoreFunction = exact_match_score) -> tuple[str, float]:
    """The most frequent training answer and its mean score on the test references.

    Raises:
        ValueError: For no training answers or no test references.

    Example:
        >>> majority_baseline(["yes", "yes", "no"], ["no", "yes", "no", "no"])
        ('yes', 0.25)
    """
    if not test_references:
        raise ValueError("the majority baseline needs at least one test sample")
    answer = most_frequent_answer(train_answers)
    return answer, float(constant_answer_scores(answer, test_references, score).mean())


def never_learned(own_scores: Tensor, majority: float, num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                  confidence: float = DEFAULT_CONFIDENCE) -> tuple[bool, Optional[tuple[float, float]]]:
    """Whether a task's own-stage score is not above ``majority`` beyond its bootstrap interval.

    Args:
        own_scores: Per-sample scores ``(n,)`` right after the task's own training.
        majority: The task's majority score on the same test set.
        num_resamples: Bootstrap resamples; 0 compares the plain mean (no interval).
        seed, confidence: Of the percentile interval (see :mod:`nlora_lightning.metrics.bootstrap`).

    Returns:
        ``(flag, interval)``: ``flag`` is true when the interval's lower end (the mean, without
        resamples) is at or below ``majority``; ``interval`` is ``None`` without resamples.

    Example:
        >>> never_learned(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.5)
        (False, (1.0, 1.0))
    """
    scores = torch.as_tensor(own_scores, dtype=torch.float64).flatten()
    if scores.numel() == 0:
        raise ValueError("never_learned needs at least one own-stage score")
    if num_resamples == 0:
        return bool(scores.mean() <= majority), None
    means = resampled_accuracies([scores], num_resamples, seed)[0][:, 0]
    low, high = percentile_interval(means, confidence)
    return bool(low <= majority), (low, high)


def baseline_average(values: Sequence[Optional[float]]) -> Optional[float]:
    """The mean over tasks (a baseline's AA); ``None`` when a task has no value (the AA would not be comparable).

    Example:
        >>> baseline_average([0.5, 0.25]), baseline_average([0.5, None])
        (0.375, None)
    """
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)

"""Per-sample scores of a generated answer against its references: ROUGE-L, exact match, accuracy.

A task's metric is a setting (``data.metric`` / ``data.task_metrics``). Every score is a float in
[0, 1] for one sample; a task's entry of the accuracy matrix is the mean over its samples, so AA,
BWT, FWT, forgetting and the bootstrap intervals apply to any of them unchanged.

- ``rougeL``: ROUGE-L F-measure (longest common subsequence of tokens) as computed by torchmetrics,
  with the Porter stemmer on and the default tokenizer (lower-case, runs of characters outside
  ``[a-z0-9]`` split tokens), which equals Google's ``rouge_score`` (SAPT's scorer; checked in
  ``tests/metrics/test_text.py``).
- ``exact_match``: 1.0 when the answer equals a reference after normalisation (lower-case, no
  punctuation, whitespace collapsed; articles kept, as in SAPT), else 0.0.
- ``accuracy``: the same comparison, for tasks with a label set (a classification task); a task
  whose references are free text has no labels to be accurate about, and asking for it is an error.

With several references the score is the best over them (natural-instructions' convention).
"""

from __future__ import annotations

from typing import Sequence

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.functional import exact_match

__all__ = ["METRICS", "LABEL_METRICS", "check_metric_name", "rouge_l", "score_prediction"]

METRICS = ("rougeL", "exact_match", "accuracy")
LABEL_METRICS = ("accuracy",)  # metrics that need the task to have a label set


def check_metric_name(name: str, option: str) -> str:
    """``name`` if it is a known metric, else a ConfigurationError naming ``option``."""
    if name not in METRICS:
        raise ConfigurationError(f"{option}: unknown metric {name!r}; metrics: {list(METRICS)}")
    return name


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """Best ROUGE-L F-measure of ``prediction`` over ``references`` (stemming on); 0.0 without references.

    Example:
        >>> round(rouge_l("the cats sat", ["a cat sat down"]), 4)
        0.5714
    """
    if not references:
        return 0.0
    from torchmetrics.functional.text.rouge import rouge_score

    # One prediction against its references: "best" keeps the reference with the highest F-measure.
    scores = rouge_score(prediction, [list(references)], accumulate="best", use_stemmer=True, rouge_keys="rougeL")
    return float(scores["rougeL_fmeasure"])


def score_prediction(metric: str, prediction: str, references: Sequence[str]) -> float:
    """The sample's score under ``metric``: the best over ``references`` (see the module docstring).

    Example:
        >>> score_prediction("exact_match", "Positive.", ["negative", "positive"])
        1.0
    """
    if metric == "rougeL":
        return rouge_l(prediction, references)
    if metric in ("exact_match", "accuracy"):
        return 1.0 if any(exact_match(prediction, reference) for reference in references) else 0.0
    raise ConfigurationError(f"unknown metric {metric!r}; metrics: {list(METRICS)}")

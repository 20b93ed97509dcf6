"""Scoring one evaluation batch: greedy generation or label ranking, each sample scored by its task's metric."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
from torch import nn

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.text import score_prediction
from nlora_lightning.models import forward as fwd

__all__ = ["EvaluationConfig", "SamplePrediction", "count_correct", "predict", "score_sum"]


@dataclass
class EvaluationConfig:
    """How answers are scored.

    Args:
        mode: ``"generate"``: greedy decoding, scored by the task's metric (exact match after
            normalisation for CL_Benchmark, the paper's metric; ROUGE-L for SuperNI; the model may
            answer outside the label set). ``"rank"``: the label with the highest
            likelihood wins (exact for classification, never off-label, one forward pass per batch
            of label candidates; an upper bound on generation accuracy).
        oracle_task_adapter: Evaluate each task with only its own adapter active (the per-task
            upper bound; needs ``adapters="per_task"`` and a consolidation other than ``merge``).
    """

    mode: Literal["generate", "rank"] = "generate"
    oracle_task_adapter: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("generate", "rank"):
            raise ConfigurationError(f"evaluation.mode must be 'generate' or 'rank', got {self.mode!r}")


@dataclass(frozen=True)
class SamplePrediction:
    """One evaluated sample: its id (see ``EvalCollator``), the answer given, the gold label, its score.

    ``prediction`` is the generated text (``generate``) or the label ranked first (``rank``).
    ``score`` is the sample's value under ``metric`` in [0, 1] (the best over its references;
    exact match and accuracy give 1.0 or 0.0); a task's entry of the accuracy matrix is the mean
    score. ``correct`` is true for a full score (for exact match: the answer matches).
    """

    sample_id: Optional[int]
    prediction: str
    label: str
    correct: bool
    score: Optional[float] = None  # None: 1.0 or 0.0 from ``correct``
    metric: str = "exact_match"

    def __post_init__(self) -> None:
        if self.score is None:
            object.__setattr__(self, "score", 1.0 if self.correct else 0.0)


def predict(
    model: nn.Module, tokenizer, batch: dict[str, Any], mode: str, is_seq2seq: bool, device: torch.device
) -> list[SamplePrediction]:
    """Score an evaluation batch (see :class:`nlora_lightning.data.collate.EvalCollator`) sample by sample."""
    ids = batch.get("sample_id") or [None] * len(batch["label_text"])
    if mode == "rank" and not batch["candidates"]:
        raise ConfigurationError(
            f"evaluation.mode='rank' needs a label set, and task {batch['task']} has free-text references; "
            "use evaluation.mode='generate'"
        )
    if mode == "rank":
        best = fwd.rank_answers(model, batch["prompt_ids"], batch["candidates"], tokenizer.pad_token_id, is_seq2seq, device)
        best = best.tolist()
        names = batch.get("label_names")
        answers = [names[b] if names is not None else str(b) for b in best]
    else:
        answers = fwd.generate_answers(
            model, tokenizer, batch["input_ids"], batch["attention_mask"], batch["max_new_tokens"], is_seq2seq
        )
    metric = batch.get("metric", "exact_match")
    references = batch.get("references") or [[label] for label in batch["label_text"]]
    if mode == "rank" and metric in ("exact_match", "accuracy"):  # the label ranked first is the gold one or not
        scores = [float(b == g) for b, g in zip(best, batch["label_index"].tolist())]
    else:
        scores = [score_prediction(metric, answer, refs) for answer, refs in zip(answers, references)]
    return [SamplePrediction(i, a, label, s == 1.0, s, metric)
            for i, a, label, s in zip(ids, answers, batch["label_text"], scores)]


def count_correct(model: nn.Module, tokenizer, batch: dict[str, Any], mode: str, is_seq2seq: bool, device: torch.device) -> int:
    """Correct answers in an evaluation batch (a count over :func:`predict`)."""
    return sum(p.correct for p in predict(model, tokenizer, batch, mode, is_seq2seq, device))


def score_sum(predictions: list[SamplePrediction]) -> float:
    """The batch's summed scores: the accuracy matrix's numerator (its count of correct answers under exact match)."""
    return float(sum(p.score for p in predictions))

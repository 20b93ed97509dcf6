"""Scoring one evaluation batch: greedy generation with exact match, or label ranking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
from torch import nn

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.functional import exact_match
from nlora_lightning.models import forward as fwd

__all__ = ["EvaluationConfig", "SamplePrediction", "count_correct", "predict"]


@dataclass
class EvaluationConfig:
    """How answers are scored.

    Args:
        mode: ``"generate"``: greedy decoding, exact match after normalisation (the paper's metric;
            the model may answer outside the label set). ``"rank"``: the label with the highest
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
    """One evaluated sample: its id (see ``EvalCollator``), the answer given, the gold label, whether they match.

    ``prediction`` is the generated text (``generate``) or the label ranked first (``rank``).
    """

    sample_id: Optional[int]
    prediction: str
    label: str
    correct: bool


def predict(
    model: nn.Module, tokenizer, batch: dict[str, Any], mode: str, is_seq2seq: bool, device: torch.device
) -> list[SamplePrediction]:
    """Score an evaluation batch (see :class:`nlora_lightning.data.collate.EvalCollator`) sample by sample."""
    ids = batch.get("sample_id") or [None] * len(batch["label_text"])
    if mode == "rank":
        best = fwd.rank_answers(model, batch["prompt_ids"], batch["candidates"], tokenizer.pad_token_id, is_seq2seq, device)
        best, gold = best.tolist(), batch["label_index"].tolist()
        names = batch.get("label_names")
        answers = [names[b] if names is not None else str(b) for b in best]
        hits = [b == g for b, g in zip(best, gold)]
    else:
        answers = fwd.generate_answers(
            model, tokenizer, batch["input_ids"], batch["attention_mask"], batch["max_new_tokens"], is_seq2seq
        )
        hits = [exact_match(answer, label) for answer, label in zip(answers, batch["label_text"])]
    return [SamplePrediction(i, a, label, bool(h)) for i, a, label, h in zip(ids, answers, batch["label_text"], hits)]


def count_correct(model: nn.Module, tokenizer, batch: dict[str, Any], mode: str, is_seq2seq: bool, device: torch.device) -> int:
    """Correct answers in an evaluation batch (a count over :func:`predict`)."""
    return sum(p.correct for p in predict(model, tokenizer, batch, mode, is_seq2seq, device))

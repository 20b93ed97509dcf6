"""Scoring one evaluation batch: greedy generation with exact match, or label ranking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.functional import exact_match
from nlora_lightning.models import forward as fwd

__all__ = ["EvaluationConfig", "count_correct"]


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


def count_correct(model: nn.Module, tokenizer, batch: dict[str, Any], mode: str, is_seq2seq: bool, device: torch.device) -> int:
    """Correct answers in an evaluation batch (see :class:`nlora_lightning.data.collate.EvalCollator`)."""
    if mode == "rank":
        best = fwd.rank_answers(model, batch["prompt_ids"], batch["candidates"], tokenizer.pad_token_id, is_seq2seq, device)
        return int((best == batch["label_index"]).sum())
    answers = fwd.generate_answers(
        model, tokenizer, batch["input_ids"], batch["attention_mask"], batch["max_new_tokens"], is_seq2seq
    )
    return sum(exact_match(answer, label) for answer, label in zip(answers, batch["label_text"]))

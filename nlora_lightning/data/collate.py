"""Padding collation for training and evaluation batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch

from nlora_lightning.models.forward import IGNORE_INDEX, pad_rows

__all__ = ["TrainCollator", "EvalCollator", "drawn_train_batches"]


@dataclass
class TrainCollator:
    """Decoder-only: prompt + answer, right-padded, loss on the answer only. Seq2seq: source and target."""

    pad_token_id: int
    decoder_only: bool

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.decoder_only:
            sequences = [e["prompt_ids"] + e["answer_ids"] for e in examples]
            labels = [[IGNORE_INDEX] * len(e["prompt_ids"]) + e["answer_ids"] for e in examples]
            input_ids = pad_rows(sequences, self.pad_token_id)
            return {
                "input_ids": input_ids,
                "attention_mask": pad_rows([[1] * len(s) for s in sequences], 0),
                "labels": pad_rows(labels, IGNORE_INDEX),
                "task": torch.tensor([e["task"] for e in examples]),
            }
        return {
            "input_ids": pad_rows([e["prompt_ids"] for e in examples], self.pad_token_id),
            "attention_mask": pad_rows([[1] * len(e["prompt_ids"]) for e in examples], 0),
            "labels": pad_rows([e["answer_ids"] for e in examples], IGNORE_INDEX),
            "task": torch.tensor([e["task"] for e in examples]),
        }


@dataclass
class EvalCollator:
    """Prompts padded for generation (left for decoder-only), plus what scoring needs.

    ``candidates`` are the task's label strings as answer token ids (with EOS): the ranking mode
    scores them, and generation stops after the longest of them unless ``max_new_tokens`` is set
    (free-text tasks have no candidates and need it). ``label_names`` are those label strings (a
    ranked prediction is reported as its label); ``sample_id`` identifies each sample; ``metric``
    names the task's per-sample score, computed against each sample's ``references``.
    """

    pad_token_id: int
    decoder_only: bool
    task: int
    candidates: list[list[int]]
    label_names: Optional[list[str]] = None
    metric: str = "exact_match"
    max_new_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.candidates and self.max_new_tokens is None:
            raise ValueError(f"task {self.task} has no label candidates: EvalCollator needs max_new_tokens")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [e["prompt_ids"] for e in examples]
        left = self.decoder_only
        return {
            "input_ids": pad_rows(prompts, self.pad_token_id, left=left),
            "attention_mask": pad_rows([[1] * len(p) for p in prompts], 0, left=left),
            "prompt_ids": prompts,
            "label_text": [e["label"] for e in examples],
            "references": [e.get("references") or [e["label"]] for e in examples],
            "metric": self.metric,
            "label_index": torch.tensor([e["label_index"] for e in examples]),
            "sample_id": [e.get("sample_id") for e in examples],
            "label_names": self.label_names,
            "task": self.task,
            "candidates": self.candidates,
            "max_new_tokens": self.max_new_tokens or max(len(c) for c in self.candidates),
        }


def drawn_train_batches(examples: Sequence[dict[str, Any]], samples: int, batch_size: int, seed: int,
                        collate: TrainCollator) -> Iterator[dict[str, torch.Tensor]]:
    """``samples`` of ``examples`` drawn without replacement by ``seed``, collated ``batch_size`` at a time.

    What a method reads at a task's end (EWC's Fisher, GORP's activations): the same draw for the
    same seed, whatever happened to the global RNG, so a resumed run computes the same statistics.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(examples), generator=generator)[:samples].tolist()
    for start in range(0, len(chosen), batch_size):
        yield collate([examples[i] for i in chosen[start : start + batch_size]])

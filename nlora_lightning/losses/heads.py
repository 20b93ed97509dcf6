"""The LM head's output during a task-loss forward: capture it, pick the answer rows, per-sample losses.

Terms reuse the module's own task-loss forward (``module._task_loss``: the answer-only head of
decoder-only models, or the full logits) and read the logits at the LM head, so they follow the same
path without a second implementation of it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IGNORE_INDEX", "answer_logits", "answer_rows", "capture_lm_head", "eval_mode", "per_sample_answer_loss"]

IGNORE_INDEX = -100


def answer_rows(logits: Tensor, labels: Tensor, seq2seq: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The rows of ``logits`` that predict a labelled token, those tokens, and each row's sample index.

    2-D logits are already those rows (the answer-only head, decoder-only, rows in the order of
    ``labels[:, 1:] != -100``); 3-D ones are decoder-only logits (position i predicts token i + 1) or
    seq2seq decoder logits (aligned with the labels).
    """
    if seq2seq:
        targets = labels
    else:
        targets = labels[:, 1:]
        logits = logits if logits.dim() == 2 else logits[:, :-1]
    mask = targets != IGNORE_INDEX
    samples = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(targets)[mask]
    return (logits if logits.dim() == 2 else logits[mask]), targets[mask], samples


def answer_logits(logits: Tensor, labels: Tensor, seq2seq: bool) -> Tensor:
    """``(n, vocab)``: the rows of ``logits`` that predict a labelled token (see :func:`answer_rows`)."""
    if logits.dim() == 2:
        return logits
    return answer_rows(logits, labels, seq2seq)[0]


def per_sample_answer_loss(logits: Tensor, labels: Tensor, seq2seq: bool) -> Tensor:
    """Per sample, the mean cross-entropy over its answer tokens (0 for a sample without any), float32.

    With one sample per batch this is exactly the task loss; summed over a batch, each sample's
    gradient is the one its own loss would give.
    """
    rows, targets, samples = answer_rows(logits, labels, seq2seq)
    losses = F.cross_entropy(rows.float(), targets, reduction="none")
    total = torch.zeros(labels.shape[0], device=losses.device).index_add(0, samples, losses)
    counts = torch.bincount(samples, minlength=labels.shape[0]).clamp(min=1)
    return total / counts


@contextmanager
def capture_lm_head(model: nn.Module, into: list, only_with_grad: bool = False) -> Iterator[None]:
    """Append every output of ``model``'s LM head to ``into`` (with ``only_with_grad``: only outputs in a graph)."""

    def hook(_module, _args, output):
        if not only_with_grad or (torch.is_grad_enabled() and output.requires_grad):
            into.append(output)

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (no dropout); every submodule's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training

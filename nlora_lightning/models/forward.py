"""Forward passes over a Hugging Face LM: training loss, greedy generation, label ranking.

Decoder-only training runs the LM head only on positions whose next token is an answer token
("answer-only logits"): the prompt positions' logits would be multiplied by -100 labels anyway, and
the head over the whole vocabulary (49,152 words for SmolLM2) is a large share of a step.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IGNORE_INDEX",
    "supports_answer_only",
    "causal_lm_loss",
    "seq2seq_loss",
    "generate_answers",
    "rank_answers",
]

IGNORE_INDEX = -100


def supports_answer_only(model: nn.Module) -> bool:
    """True when logits are exactly ``lm_head(last_hidden_state)`` (no soft-capping or logit scale)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "final_logit_softcapping", None) is not None or hasattr(config, "logit_scale"):
        return False
    return model.get_output_embeddings() is not None and getattr(model, "base_model", model) is not model


def _answer_hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hidden states at the positions that predict a labelled token, those tokens, and their rows."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(targets)[mask]
    return hidden[:, :-1][mask], targets[mask], rows


def causal_lm_loss(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, answer_only: bool = True
) -> Tensor:
    """Mean next-token cross-entropy over the labelled (answer) tokens, as Hugging Face computes it."""
    if answer_only and supports_answer_only(model):
        hidden, targets, _ = _answer_hidden(model, input_ids, attention_mask, labels)
        logits = model.get_output_embeddings()(hidden)
        return F.cross_entropy(logits.float(), targets)
    return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss


def seq2seq_loss(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss


@torch.no_grad()
def generate_answers(
    model: nn.Module,
    tokenizer,
    input_ids: Tensor,
    attention_mask: Tensor,
    max_new_tokens: int,
    is_seq2seq: bool,
) -> list[str]:
    """Greedy decoding with the KV cache, stopping at EOS or after ``max_new_tokens``.

    Decoder-only prompts must be left-padded so every row's answer starts at the same column.
    """
    config = copy.deepcopy(model.generation_config)
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty"):
        if hasattr(config, name):
            setattr(config, name, None)
    config.do_sample = False
    config.num_beams = 1
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    answers = output if is_seq2seq else output[:, input_ids.shape[1] :]
    return tokenizer.batch_decode(answers, skip_special_tokens=True)


def _pad_right(rows: Sequence[Sequence[int]], value: int, device: torch.device) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long, device=device)
    return out


@torch.no_grad()
def rank_answers(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    is_seq2seq: bool,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Index of the most likely candidate answer for each prompt (sum of token log-probabilities).

    Every (prompt, candidate) pair is scored in one forward pass; the candidates carry their EOS,
    so "answer ends here" is part of the score and a label that is a prefix of another cannot win
    by being short.
    """
    device = device or next(model.parameters()).device
    n_prompts, n_cands = len(prompt_ids), len(candidate_ids)
    if is_seq2seq:
        encoder_ids = _pad_right([p for p in prompt_ids for _ in range(n_cands)], pad_token_id, device)
        labels = _pad_right([c for _ in prompt_ids for c in candidate_ids], IGNORE_INDEX, device)
        logits = model(input_ids=encoder_ids, attention_mask=encoder_ids.ne(pad_token_id).long(), labels=labels).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        mask = labels.ne(IGNORE_INDEX)
        token_scores = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        scores = token_scores.sum(-1)
    else:
        sequences = [list(p) + list(c) for p in prompt_ids for c in candidate_ids]
        labels_rows = [[IGNORE_INDEX] * len(p) + list(c) for p in prompt_ids for c in candidate_ids]
        input_ids = _pad_right(sequences, pad_token_id, device)
        attention_mask = _pad_right([[1] * len(s) for s in sequences], 0, device)
        labels = _pad_right(labels_rows, IGNORE_INDEX, device)
        if supports_answer_only(model):
            hidden, targets, rows = _answer_hidden(model, input_ids, attention_mask, labels)
            logprobs = torch.log_softmax(model.get_output_embeddings()(hidden).float(), dim=-1)
            token_scores = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            scores = torch.zeros(len(sequences), device=device).index_add_(0, rows, token_scores)
        else:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
            targets = labels[:, 1:]
            mask = targets.ne(IGNORE_INDEX)
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            scores = (logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(-1)
    return scores.view(n_prompts, n_cands).argmax(-1)

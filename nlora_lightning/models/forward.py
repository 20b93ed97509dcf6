"""Forward passes over a Hugging Face LM: training loss, greedy generation, label ranking.

Decoder-only training runs the LM head only on positions whose next token is an answer token
("answer-only logits"): the prompt positions' logits would be multiplied by -100 labels anyway, and
the head over the whole vocabulary (49,152 words for SmolLM2) is a large share of a step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlora_lightning.models.generation import generate_answers  # re-exported: evaluation calls fwd.generate_answers
from nlora_lightning.models.shared_prefix import can_share_prefix, prompt_pass

__all__ = [
    "IGNORE_INDEX",
    "TaskOutput",
    "answer_positions",
    "eval_mode",
    "per_sample_loss",
    "task_forward",
    "supports_answer_only",
    "causal_lm_loss",
    "seq2seq_loss",
    "generate_answers",
    "label_scores",
    "pad_rows",
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


class TaskOutput(NamedTuple):
    """What one task forward gives the training step and the methods.

    ``logits`` are the rows that predict a labelled (answer) token, ``(n, vocab)``, in the order of
    :func:`answer_positions`; ``targets`` the tokens they predict and ``samples`` each row's sample.
    """

    loss: Tensor  # mean cross-entropy over the answer tokens, as Hugging Face computes it
    logits: Tensor
    targets: Tensor
    samples: Tensor


def answer_positions(labels: Tensor, seq2seq: bool) -> tuple[Tensor, Tensor]:
    """Where the answer is: the mask over the logits' positions that predict a labelled token, and its targets.

    Decoder-only: position i predicts token i + 1, so the mask is over ``labels[:, 1:]``; seq2seq
    decoder logits are aligned with the labels. The one definition of answer-position selection.
    """
    targets = labels if seq2seq else labels[:, 1:]
    return targets != IGNORE_INDEX, targets


def _rows(labels: Tensor, mask: Tensor) -> Tensor:
    return torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(mask)[mask]


def _answer_hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hidden states at the positions that predict a labelled token, those tokens, and their rows."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    mask, targets = answer_positions(labels, seq2seq=False)
    return hidden[:, :-1][mask], targets[mask], _rows(labels, mask)


def task_forward(model: nn.Module, batch: dict[str, Tensor], seq2seq: bool, answer_only: bool = True) -> TaskOutput:
    """The training forward: the task loss and the answer rows' logits (one pass, no hook).

    Decoder-only with ``answer_only`` runs the LM head on the answer positions only; otherwise
    the full logits come from the model and the answer rows are selected from them.
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if not seq2seq and answer_only and supports_answer_only(model):
        hidden, targets, rows = _answer_hidden(model, input_ids, attention_mask, labels)
        logits = model.get_output_embeddings()(hidden)
        return TaskOutput(F.cross_entropy(logits.float(), targets), logits, targets, rows)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False)
    mask, targets = answer_positions(labels, seq2seq)
    logits = out.logits if seq2seq else out.logits[:, :-1]
    return TaskOutput(out.loss, logits[mask], targets[mask], _rows(labels, mask))


def per_sample_loss(out: TaskOutput, batch_size: int) -> Tensor:
    """Per sample, the mean cross-entropy over its answer tokens (0 for a sample without any), float32.

    With one sample per batch this is exactly the task loss; summed over a batch, each sample's
    gradient is the one its own loss would give.
    """
    losses = F.cross_entropy(out.logits.float(), out.targets, reduction="none")
    total = torch.zeros(batch_size, device=losses.device).index_add(0, out.samples, losses)
    return total / torch.bincount(out.samples, minlength=batch_size).clamp(min=1)


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


def causal_lm_loss(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, answer_only: bool = True
) -> Tensor:
    """Mean next-token cross-entropy over the labelled (answer) tokens, as Hugging Face computes it."""
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return task_forward(model, batch, seq2seq=False, answer_only=answer_only).loss


def seq2seq_loss(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return task_forward(model, batch, seq2seq=True).loss


def pad_rows(rows: Sequence[Sequence[int]], value: int, left: bool = False, device: Optional[torch.device] = None) -> Tensor:
    """Token rows as one (len(rows), longest) tensor, padded with ``value`` on the right (or left)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        if len(row):
            start = width - len(row) if left else 0
            out[i, start : start + len(row)] = torch.as_tensor(row, dtype=torch.long, device=device)
    return out


def _pad_left(rows: Sequence[Sequence[int]], value: int, device: torch.device) -> tuple[Tensor, Tensor]:
    return pad_rows(rows, value, left=True, device=device), pad_rows([[1] * len(r) for r in rows], 0, left=True, device=device)


def _labelled_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """Per row, the summed log-probability of the labelled tokens (``labels`` aligned with ``logits``)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return (logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * labels.ne(IGNORE_INDEX)).sum(-1)


def _head_logprobs(model: nn.Module, hidden: Tensor) -> Tensor:
    return torch.log_softmax(model.get_output_embeddings()(hidden).float(), dim=-1)


# Attention implementations that accept a custom 4D (additive) mask; others score candidates one by one.
_CUSTOM_MASK_ATTENTION = ("sdpa", "eager")
# Log-probabilities of the packed candidate tokens are computed this many vocabulary rows at a time.
_HEAD_CHUNK_ELEMENTS = 1 << 24


def _prompt_cache(model, prompt_ids, pad_token_id, device):
    """The prompts run once: KV cache, mask, lengths, log-probabilities of the next token, compute dtype."""
    ids, mask = _pad_left(prompt_ids, pad_token_id, device)
    lengths = mask.sum(-1, keepdim=True)
    prompts, mask = prompt_pass(model.base_model, ids, mask, share=can_share_prefix(model))  # the shared prefix once
    first = _head_logprobs(model, prompts.last_hidden_state[:, -1])  # predicts each candidate's first token
    return prompts.cache, mask, lengths, first, prompts.last_hidden_state.dtype


def _continuation_scores(model, cache, mask, lengths, dtype, candidate_ids, chosen, device) -> Tensor:
    """Summed log-probabilities of every token after the first of the ``chosen`` candidates of each row.

    Row ``r`` feeds the tokens of its candidates ``chosen[r]`` side by side in one pass over the
    prompt cache, each token attending to the prompt and to the earlier tokens of its own candidate
    (a block-diagonal causal mask), with positions restarting after the prompt for each candidate.
    A candidate's last token predicts nothing, so it is not fed. Rows are padded to the longest
    row; entries of candidates not chosen are 0. The cache is cut back to the prompts afterwards.
    """
    rows, count = len(chosen), len(candidate_ids)
    fed = [[(c, k) for c in row for k in range(len(candidate_ids[c]) - 1)] for row in chosen]
    width = max(map(len, fed))
    sums = torch.zeros(rows, count + 1, device=device)  # column `count` collects the padding
    if width == 0:  # single-token candidates: the prompt pass scored them
        return sums[:, :count]
    owner = torch.full((rows, width), count, dtype=torch.long)
    offset, tokens, targets = (torch.zeros(rows, width, dtype=torch.long) for _ in range(3))
    for r, row in enumerate(fed):
        if row:
            owner[r, : len(row)] = torch.tensor([c for c, _ in row])
            offset[r, : len(row)] = torch.tensor([k for _, k in row])
            tokens[r, : len(row)] = torch.tensor([candidate_ids[c][k] for c, k in row])
            targets[r, : len(row)] = torch.tensor([candidate_ids[c][k + 1] for c, k in row])
    owner, offset, tokens, targets = (t.to(device) for t in (owner, offset, tokens, targets))
    index = torch.arange(width, device=device)
    # Padding shares one owner, so every query row allows at least itself (no all-masked softmax).
    own_prefix = (owner[:, :, None] == owner[:, None, :]) & (index[None, :] <= index[:, None])
    allowed = torch.cat([mask.bool()[:, None, :].expand(rows, width, -1), own_prefix], dim=-1)
    additive = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    hidden = model.base_model(
        input_ids=tokens,
        attention_mask=additive[:, None],
        position_ids=lengths + offset,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    cache.crop(-width)
    head = model.get_output_embeddings()
    vocabulary = getattr(head, "out_features", None) or model.config.vocab_size
    step = max(1, _HEAD_CHUNK_ELEMENTS // max(1, rows * vocabulary))
    for start in range(0, width, step):  # bounded memory: rows x step x vocabulary logits at a time
        piece = hidden[:, start : start + step]
        # One 2-D matmul: the head over a 3-D slice runs as a batched matmul, 3x slower on CPU.
        logits = head(piece.reshape(-1, piece.shape[-1])).float().view(rows, piece.shape[1], -1)
        chosen_logit = logits.gather(-1, targets[:, start : start + step].unsqueeze(-1)).squeeze(-1)
        sums.scatter_add_(1, owner[:, start : start + step], chosen_logit - logits.logsumexp(-1))
    return sums[:, :count]


def _rank_decoder_only(model, prompt_ids, candidate_ids, pad_token_id, device, best_only: bool = False) -> Tensor:
    """Scores with the prompts run once and the candidates in one more pass over the shared KV cache.

    ``best_only`` (what ranking needs) scores exactly only the candidates that can still win:
    log-probabilities are <= 0, so a candidate scores at most the log-probability of its first
    token, which the prompt pass already gives. The candidate with the best first token is scored
    in full; every other candidate whose first token cannot beat that score gets -inf, and the
    rest are scored in one more pass. The argmax equals the one over the full scores; after
    fine-tuning one label usually dominates, so about one candidate per prompt is fed instead of
    all of them.
    """
    if getattr(model.config, "_attn_implementation", "sdpa") not in _CUSTOM_MASK_ATTENTION:
        return _rank_decoder_only_sequential(model, prompt_ids, candidate_ids, pad_token_id, device)
    cache, mask, lengths, first, dtype = _prompt_cache(model, prompt_ids, pad_token_id, device)
    first = first[:, [candidate[0] for candidate in candidate_ids]].contiguous()
    context = (model, cache, mask, lengths, dtype, candidate_ids)
    rows, count = first.shape
    if not best_only:
        return first + _continuation_scores(*context, [list(range(count))] * rows, device)
    leader = first.argmax(-1, keepdim=True)
    leader_score = (first + _continuation_scores(*context, [[c] for c in leader.flatten().tolist()], device)).gather(1, leader)
    contenders = (first >= leader_score).scatter_(1, leader, False)
    scores = torch.full_like(first, float("-inf")).scatter_(1, leader, leader_score)
    if contenders.any():
        chosen = [row.nonzero().flatten().tolist() for row in contenders.cpu()]
        scores = torch.where(contenders, first + _continuation_scores(*context, chosen, device), scores)
    return scores


def _rank_decoder_only_sequential(model, prompt_ids, candidate_ids, pad_token_id, device) -> Tensor:
    """Scores with the prompts run once: each candidate continues the shared KV cache, which is then cut back.

    For attention implementations that take no custom mask (flash attention); one short pass per
    candidate.
    """
    cache, mask, lengths, first, _ = _prompt_cache(model, prompt_ids, pad_token_id, device)
    scores = torch.empty(len(prompt_ids), len(candidate_ids), device=device)
    for c, candidate in enumerate(candidate_ids):
        tokens = torch.as_tensor(candidate, dtype=torch.long, device=device).expand(len(prompt_ids), -1)
        score = first[:, candidate[0]]
        if len(candidate) > 1:
            hidden = model.base_model(
                input_ids=tokens,
                attention_mask=torch.cat([mask, torch.ones_like(tokens)], dim=1),
                position_ids=lengths + torch.arange(len(candidate), device=device),
                cache=cache,
                use_cache=True,
            ).last_hidden_state
            follow = _head_logprobs(model, hidden[:, :-1]).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
            score = score + follow.sum(-1)
            cache.crop(-len(candidate))  # back to the prompts alone for the next candidate
        scores[:, c] = score
    return scores


def _rank_full_sequences(model, prompt_ids, candidate_ids, pad_token_id, device) -> Tensor:
    """Scores from full (prompt + candidate) sequences: for models without answer-only logits."""
    sequences = [list(p) + list(c) for p in prompt_ids for c in candidate_ids]
    labels = pad_rows([[IGNORE_INDEX] * len(p) + list(c) for p in prompt_ids for c in candidate_ids], IGNORE_INDEX, device=device)
    input_ids = pad_rows(sequences, pad_token_id, device=device)
    attention_mask = pad_rows([[1] * len(s) for s in sequences], 0, device=device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    return _labelled_logprob(logits, labels[:, 1:]).view(len(prompt_ids), len(candidate_ids))


def _rank_seq2seq(model, prompt_ids, candidate_ids, pad_token_id, device) -> Tensor:
    """Scores with the encoder run once per prompt; the decoder scores every candidate."""
    n_cands = len(candidate_ids)
    ids = pad_rows(prompt_ids, pad_token_id, device=device)
    mask = pad_rows([[1] * len(p) for p in prompt_ids], 0, device=device)
    encoded = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    labels = pad_rows(candidate_ids, IGNORE_INDEX, device=device).repeat(len(prompt_ids), 1)
    logits = model(
        encoder_outputs=(encoded.repeat_interleave(n_cands, 0),),
        attention_mask=mask.repeat_interleave(n_cands, 0),
        labels=labels,
    ).logits
    return _labelled_logprob(logits, labels).view(len(prompt_ids), n_cands)


@torch.no_grad()
def label_scores(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    is_seq2seq: bool,
    device: Optional[torch.device] = None,
    best_only: bool = False,
) -> Tensor:
    """Log-likelihood of every candidate answer after every prompt (prompts x candidates).

    The prompt is processed once (decoder-only: its KV cache is shared by the candidates, which are
    scored together in one more pass; seq2seq: one encoder pass, one decoder pass over all
    candidates), so scoring C labels costs about one prompt pass plus their tokens.
    Candidates carry their EOS, so "the answer ends here" is part of the score and a label that is
    a prefix of another cannot win by being short. ``best_only`` (decoder-only models) gives the
    exact score of every candidate that could be the best and -inf to those that cannot (see
    ``_rank_decoder_only``): the argmax is the same, the cost lower.
    """
    device = device or next(model.parameters()).device
    if is_seq2seq:
        return _rank_seq2seq(model, prompt_ids, candidate_ids, pad_token_id, device)
    if supports_answer_only(model):
        return _rank_decoder_only(model, prompt_ids, candidate_ids, pad_token_id, device, best_only)
    return _rank_full_sequences(model, prompt_ids, candidate_ids, pad_token_id, device)


def rank_answers(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    is_seq2seq: bool,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Index of the most likely candidate answer for each prompt (see :func:`label_scores`)."""
    return label_scores(model, prompt_ids, candidate_ids, pad_token_id, is_seq2seq, device, best_only=True).argmax(-1)

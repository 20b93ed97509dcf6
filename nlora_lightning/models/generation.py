"""Greedy generation for evaluation: the KV cache, and rows that leave the batch at their EOS.

Hugging Face's ``generate`` keeps a finished row in the batch until every row has finished, feeding
it padding. When answers differ in length (SuperNI: 1 to 50 tokens) many decode steps then run on
rows whose answer is complete. :func:`greedy_decode` drops a decoder-only row from the batch and
from its KV cache as soon as it emits EOS; the tokens it returns are those of ``model.generate``
with greedy decoding (``tests/models/test_generation.py`` compares them on several architectures).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from nlora_lightning.models.shared_prefix import can_share_prefix, prefix_to_share, prompt_pass

__all__ = ["generate_answers", "greedy_decode", "length_groups", "plain_greedy"]

# What one decode step costs, in prompt tokens of the prompt pass. The prompt pass is compute-bound
# (~70 % of the matmul peak on 2 CPU cores), a decode step is not (~8 %: the weights are read for a
# few rows), so one step costs about what 50-60 prompt tokens cost (SmolLM2-135M on 2 CPU cores,
# benchmarks/results/performance.md). length_groups splits a batch only where padding costs more.
DECODE_STEP_TOKENS = 64

# Generation settings that change which token greedy decoding picks: with any of them set, the
# model's own ``generate`` runs (it implements them), not the lean loop.
_TOKEN_ALTERING = ("min_length", "min_new_tokens", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens",
                   "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias",
                   "exponential_decay_length_penalty", "encoder_no_repeat_ngram_size")


def plain_greedy(config) -> bool:
    """True when ``config`` (a ``GenerationConfig``) leaves greedy decoding a plain argmax."""
    return not any(getattr(config, name, None) for name in _TOKEN_ALTERING)


@torch.no_grad()
def greedy_decode(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int,
                  eos_token_id: int) -> list[list[int]]:
    """Each row's greedily generated tokens, its EOS included when it emits one.

    Args:
        model: A decoder-only Hugging Face causal LM (accepting ``cache`` and ``logits_to_keep``).
        input_ids: ``(rows, width)`` prompts, left-padded.
        attention_mask: ``(rows, width)``, 0 on the padding.
        max_new_tokens: Tokens generated at most per row.
        eos_token_id: The token that ends a row's answer.

    The prompts' shared prefix runs once (:func:`~nlora_lightning.models.shared_prefix.prompt_pass`).
    A row that emits EOS leaves the batch and the KV cache before the next step, so later steps
    cost only the rows still generating. Positions count from each row's first real token, as
    ``generate`` derives them from the attention mask.
    """
    rows = input_ids.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    if rows == 0 or max_new_tokens <= 0:
        return tokens
    lengths = attention_mask.long().sum(-1)
    out, mask = prompt_pass(lambda **kwargs: model(**kwargs, logits_to_keep=1), input_ids, attention_mask,
                            share=can_share_prefix(model))
    cache, live = out.cache, torch.arange(rows, device=input_ids.device)
    for step in range(max_new_tokens):
        chosen = out.logits[:, -1].argmax(-1)
        for row, token in zip(live.tolist(), chosen.tolist()):
            tokens[row].append(token)
        if step == max_new_tokens - 1:
            break
        going = chosen.ne(eos_token_id)
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            live, chosen, mask, lengths = live[keep], chosen[keep], mask[keep], lengths[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=(lengths + step)[:, None],
                    cache=cache, use_cache=True, logits_to_keep=1)
    return tokens


def length_groups(lengths: list[int], new_tokens: int, step_tokens: int = DECODE_STEP_TOKENS,
                  shared: int = 0) -> list[list[int]]:
    """Rows grouped by prompt length so that padding plus decode steps cost least.

    A group of ``n`` rows whose longest prompt has ``w`` tokens costs ``shared + n * (w - shared)``
    prompt tokens (its padding included; the prefix every row shares runs once per group) plus
    ``new_tokens * step_tokens`` for its decode loop. With the rows sorted
    longest first, the cheapest split into contiguous groups is found exactly by dynamic programming.

    Args:
        lengths: Each row's prompt length (no padding).
        new_tokens: Decode steps a group may take (``max_new_tokens``).
        step_tokens: The cost of one decode step in prompt tokens.
        shared: Leading tokens every row shares (:func:`~nlora_lightning.models.shared_prefix.shared_prefix_length`).

    Returns:
        Lists of row indices, longest prompts first; every row exactly once.

    Example:
        >>> length_groups([100, 10, 98, 12], new_tokens=1, step_tokens=8)
        [[0, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    fixed = new_tokens * step_tokens + shared
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):  # best[end]: cheapest cost of the first `end` rows
        for start in range(end):
            cost = best[start] + (end - start) * (lengths[order[start]] - shared) + fixed
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


@torch.no_grad()
def generate_answers(
    model: nn.Module,
    tokenizer,
    input_ids: Tensor,
    attention_mask: Tensor,
    max_new_tokens: int,
    is_seq2seq: bool,
) -> list[str]:
    """Greedy decoding with the KV cache, stopping each row at its EOS or after ``max_new_tokens``.

    Decoder-only prompts must be left-padded so every row's answer starts at the same column. They
    run through :func:`greedy_decode` unless the model's generation config alters greedy choices,
    in groups of similar prompt length (:func:`length_groups`: a batch pads less); encoder-decoder
    models (and those configs) use ``model.generate``.
    """
    config = copy.deepcopy(model.generation_config)
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty"):
        if hasattr(config, name):
            setattr(config, name, None)
    if not is_seq2seq and plain_greedy(config):
        lengths = attention_mask.sum(-1).tolist()
        rows: list[list[int]] = [[] for _ in lengths]
        shared = prefix_to_share(input_ids, attention_mask, can_share_prefix(model))  # as prompt_pass will
        for group in length_groups(lengths, max_new_tokens, DECODE_STEP_TOKENS, shared):
            width = max(lengths[i] for i in group)  # left padding: the group's prompts fit in the last columns
            index = torch.tensor(group, device=input_ids.device)
            tokens = greedy_decode(model, input_ids[index, -width:], attention_mask[index, -width:], max_new_tokens,
                                   tokenizer.eos_token_id)
            for i, row in zip(group, tokens):
                rows[i] = row
        return tokenizer.batch_decode(rows, skip_special_tokens=True)
    config.do_sample = False
    config.num_beams = 1
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    answers = output if is_seq2seq else output[:, input_ids.shape[1] :]
    return tokenizer.batch_decode(answers, skip_special_tokens=True)

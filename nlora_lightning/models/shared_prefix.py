"""The prompt pass of a decoder-only batch whose prompts start alike: the shared prefix runs once.

Every prompt of a CL_Benchmark task starts with the same task header, instruction and label
options (26-45 % of the prompt's tokens on standard order 1 with SmolLM2's tokenizer; a SuperNI
task's definition is longer still), and evaluation batches hold one task. Run row by row, that
prefix is computed once per row; here it runs once for the batch, its KV cache is repeated for
every row, and the rows' remaining tokens attend to it:

    keys of row i:   [ prefix (P, shared) | padding | the row's own tokens ]
    positions:         0 .. P-1                        P .. len_i - 1

Same keys, values and positions as the left-padded batch, so the same attention: only the order
of floating-point sums differs (the prefix's matmuls run at batch size 1). Evaluation only: in
training, LoRA dropout draws a different mask for every row's prefix, so rows do not share it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["MIN_SHARED_TOKENS", "can_share_prefix", "prefix_to_share", "prompt_pass", "shared_prefix_length"]

# Below this many shared tokens the second call and the repeated cache cost about what they save.
MIN_SHARED_TOKENS = 8
# Attention implementations that honour a 2-D key mask with a gap in the middle (the padding between
# the prefix and a row's own tokens). Flash attention's unpadding assumes padding at one end only.
_GAP_MASK_ATTENTION = ("sdpa", "eager")


def can_share_prefix(model) -> bool:
    """Whether ``model``'s attention takes the gapped key mask :func:`prompt_pass` builds."""
    return getattr(getattr(model, "config", None), "_attn_implementation", "sdpa") in _GAP_MASK_ATTENTION


def shared_prefix_length(input_ids: Tensor, attention_mask: Tensor) -> int:
    """How many leading real tokens every row shares, left padding; at most the shortest row's length - 1.

    Each row keeps at least one token of its own, whose output predicts the row's next token.

    Example:
        >>> ids = torch.tensor([[0, 5, 6, 7], [5, 6, 8, 9]]); mask = (ids != 0).long()
        >>> shared_prefix_length(ids, mask)
        2
    """
    lengths = attention_mask.sum(-1)
    if input_ids.shape[0] == 0 or int(lengths.min()) == 0:
        return 0
    width, shortest = input_ids.shape[1], int(lengths.min())
    starts = width - lengths  # left padding: each row's first real column
    columns = starts[:, None] + torch.arange(shortest - 1, device=input_ids.device)[None, :]
    aligned = input_ids.gather(1, columns)  # each row's first (shortest - 1) real tokens
    agree = (aligned == aligned[:1]).all(0)
    return int(agree.long().cumprod(0).sum())


def prefix_to_share(input_ids: Tensor, attention_mask: Tensor, share: bool = True,
                    min_shared: int = MIN_SHARED_TOKENS) -> int:
    """The prefix :func:`prompt_pass` runs once: the shared prefix when sharing pays, else 0."""
    shared = shared_prefix_length(input_ids, attention_mask) if share and input_ids.shape[0] > 1 else 0
    return shared if shared >= max(1, min_shared) else 0


def prompt_pass(forward: Callable[..., Any], input_ids: Tensor, attention_mask: Tensor,
                min_shared: int = MIN_SHARED_TOKENS, share: bool = True) -> tuple[Any, Tensor]:
    """Run left-padded prompts through ``forward`` with a KV cache, the shared prefix once.

    Args:
        forward: The model's forward (``model`` or ``model.base_model``), called with ``input_ids``,
            ``attention_mask``, ``position_ids``, ``use_cache=True`` and, the second time, ``cache``.
        input_ids: ``(rows, width)`` prompts, left-padded.
        attention_mask: ``(rows, width)``, 0 on the padding.
        min_shared: Share a prefix only when it has at least this many tokens.
        share: ``False`` runs the plain left-padded pass (see :func:`can_share_prefix`).

    Returns:
        The output of the last call (its ``cache`` holds every row's prompt; its last position is
        each row's last prompt token) and the cache's key mask, to extend during decoding. Each
        row's next position is its prompt length, as without sharing.
    """
    mask = attention_mask.long()
    rows = input_ids.shape[0]
    shared = prefix_to_share(input_ids, mask, share, min_shared)
    if not shared:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens count from 0
        return forward(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True), mask
    lengths = mask.sum(-1)
    first = int(input_ids.shape[1] - lengths[0])
    prefix = input_ids[:1, first : first + shared]
    device = input_ids.device
    out = forward(input_ids=prefix, attention_mask=torch.ones_like(prefix), position_ids=torch.arange(shared, device=device)[None],
                  use_cache=True)
    cache = out.cache
    cache.batch_repeat_interleave(rows)
    own = lengths - shared  # each row's tokens after the prefix, >= 1
    width = int(own.max())
    columns = torch.arange(width, device=device)[None, :]
    own_mask = (columns >= width - own[:, None]).long()
    own_ids = input_ids[:, -width:]  # the prefix tokens left in the shorter rows' columns are masked out
    positions = (shared + columns - (width - own[:, None])).clamp(min=0)
    key_mask = torch.cat([mask.new_ones(rows, shared), own_mask], dim=-1)
    return forward(input_ids=own_ids, attention_mask=key_mask, position_ids=positions, cache=cache, use_cache=True), key_mask

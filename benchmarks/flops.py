"""How far a step is from the machine's limit: matmul FLOPs of a step counted by hand, the measured peak, a profile.

The counts are of matrix products only (elementwise work, norms and softmax are memory-bound and
left out), in FLOPs = 2 x multiply-adds, for a LLaMA-family decoder over the batch tensor as it is
computed (padded rows included; the padding share is reported beside it):

- forward of the frozen base: every projection, attention scores and values over the padded length
  (a padding mask makes the kernels compute the full L x L), the LM head where logits are taken;
- backward through the activations: each projection's input gradient (1 x its forward), attention's
  four products (2 x its forward), the LM head's input gradient; the first layer's q/k/v inputs are
  the frozen embeddings, which need no gradient, so neither do the products that only feed them;
- the adapters: the trainable slot's forward, input gradient and factor gradients, and the frozen
  part in its current form (rank-R pair, separate dense update, or folded into the base product).

``tests/benchmarks/test_flops.py`` checks the counts by hand on a tiny shape and against
``torch.utils.flop_counter.FlopCounterMode`` on a tiny model.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

__all__ = ["AdapterShape", "DecoderShape", "generation_flops", "matmul_peak_flops", "profile_table", "training_step_flops"]

FrozenCost = Literal["none", "factors", "dense", "folded"]


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a LLaMA-family decoder that set its matmul FLOPs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> "DecoderShape":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads, head_dim, config.vocab_size)

    def projections(self) -> dict[str, tuple[int, int]]:
        """``name: (d_in, d_out)`` of each linear layer in one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, m = self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}


@dataclass(frozen=True)
class AdapterShape:
    """The adapted projections (names as in :meth:`DecoderShape.projections`), the slot's rank, the frozen part."""

    targets: tuple[str, ...] = ("q_proj", "v_proj")
    r: int = 8
    frozen_rank: int = 0
    frozen_form: FrozenCost = "none"

    def frozen_macs_per_token(self, d_in: int, d_out: int) -> int:
        if self.frozen_rank == 0 or self.frozen_form in ("none", "folded"):
            return 0  # folded: (W + Delta) x costs what W x costs
        return self.frozen_rank * (d_in + d_out) if self.frozen_form == "factors" else d_in * d_out


def training_step_flops(shape: DecoderShape, adapters: AdapterShape, rows: int, length: int, logit_positions: int) -> dict[str, int]:
    """Matmul FLOPs of one training step on a ``rows x length`` batch, by part (and ``total``).

    Args:
        logit_positions: Positions where the LM head runs (the labelled tokens with answer-only
            logits, ``rows * length`` without).
    """
    tokens = rows * length
    projections = shape.projections()
    first_layer_inputs = ("q_proj", "k_proj", "v_proj")
    linear = sum(d_in * d_out for d_in, d_out in projections.values())
    first_qkv = sum(projections[name][0] * projections[name][1] for name in first_layer_inputs)
    head = shape.hidden * shape.vocab * logit_positions
    # Projections: forward everywhere; input gradients everywhere but the first layer's q/k/v.
    base_forward = shape.layers * tokens * linear + head
    activation_backward = shape.layers * tokens * linear - tokens * first_qkv + head
    # Attention: scores and values forward, four products backward (dQ, dK, dP, dV) in every layer
    # (the kernels compute all four even where the first layer's K needs no gradient).
    attention_product = rows * shape.heads * shape.head_dim * length * length
    attention = shape.layers * (2 + 4) * attention_product
    slot_forward = slot_backward = frozen = 0
    for name in adapters.targets:
        d_in, d_out = projections[name]
        # The adapter's input gradient is skipped where its input is the frozen embeddings (first layer q/k/v).
        input_grad_layers = shape.layers - (1 if name in first_layer_inputs else 0)
        slot_forward += shape.layers * tokens * adapters.r * (d_in + d_out)
        # dB = dy^T h and dh = dy B (r d_out each), dA = dh^T x (r d_in), dx = dh A (r d_in) where needed.
        slot_backward += tokens * adapters.r * (shape.layers * (2 * d_out + d_in) + input_grad_layers * d_in)
        frozen += (shape.layers + input_grad_layers) * tokens * adapters.frozen_macs_per_token(d_in, d_out)
    parts = {"base_forward": base_forward, "activation_backward": activation_backward, "attention": attention,
             "slot_forward": slot_forward, "slot_backward": slot_backward, "frozen_adapters": frozen}
    parts = {key: 2 * value for key, value in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def generation_flops(shape: DecoderShape, adapters: AdapterShape, rows: int, prompt_length: int, new_tokens: int) -> dict[str, int]:
    """Matmul FLOPs of greedy decoding with the KV cache: the prompt pass and the decode steps.

    The prompt pass computes every prompt position and the LM head on the last one; each of the
    ``new_tokens - 1`` decode steps computes one position per row against the cache so far.
    """
    projections = shape.projections()
    linear = sum(d_in * d_out for d_in, d_out in projections.values())
    adapter = sum(adapters.r * sum(projections[n]) + adapters.frozen_macs_per_token(*projections[n]) for n in adapters.targets)
    per_token = shape.layers * (linear + adapter)

    def attention(queries: int, keys: int) -> int:
        return shape.layers * 2 * rows * shape.heads * shape.head_dim * queries * keys

    head = rows * shape.hidden * shape.vocab
    prompt = rows * prompt_length * per_token + attention(prompt_length, prompt_length) + head
    decode = sum(rows * per_token + attention(1, prompt_length + step) + head for step in range(1, new_tokens))
    return {"prompt_pass": 2 * prompt, "decode_steps": 2 * decode, "total": 2 * (prompt + decode)}


def matmul_peak_flops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large fp32 ``torch.mm`` on ``device``, the best of ``repeats`` timings (after a warm-up)."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def profile_table(fn: Callable[[], None], device: torch.device, top: int = 12) -> str:
    """The top operators of one call of ``fn`` by self time (torch.profiler), as a text table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top)


def utilisation(flops: int, seconds: Sequence[float] | float, peak: float) -> tuple[float, float]:
    """Achieved FLOP/s (median of ``seconds``) and its share of ``peak``."""
    median = statistics.median(seconds) if isinstance(seconds, Sequence) else seconds
    achieved = flops / median
    return achieved, achieved / peak

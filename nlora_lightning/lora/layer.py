"""One adapted linear layer: a frozen base, the frozen updates of finished tasks, and one trainable slot.

    y = base(x) + frozen_B (frozen_A x) + (alpha / r) * B (A dropout(x))

``frozen_A`` (R x d_in) and ``frozen_B`` (d_out x R) hold the finished tasks' factors concatenated
along the rank, with each task's scaling folded into its columns of ``frozen_B``: the sum of any
number of finished tasks costs one rank-R product, so a step at task 15 costs what a step at task 1
costs. Once the rank R passes what pays (``R (d_in + d_out) > d_in d_out``: from 37 finished
tasks of r = 8 on SmolLM2's 576 x 576 q_proj, from 19 on its 576 -> 192 v_proj) the pair is also
kept as one dense ``frozen_delta`` (d_out x d_in, fp32 or fp64, computed from the factors) and the
forward applies that instead: the same function, so a step at task 100 costs about what a step at
task 1 costs. The factors stay for the regularizers that read them (O-LoRA, ELLA). The trainable
slot (``lora_A``, ``lora_B``) is recycled from task to task: its Parameter objects never change,
which keeps optimizers, DDP buckets and checkpoints simple.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["ContinualLoRALinear"]


class ContinualLoRALinear(nn.Module):
    """Wraps a frozen ``nn.Linear`` (or a bitsandbytes quantized linear) with continual LoRA.

    Args:
        base_layer: The layer to adapt; its parameters are left untouched.
        r: Rank of the trainable slot.
        alpha: LoRA alpha; the slot's update is scaled by ``alpha / r``.
        dropout: Dropout probability on the slot's input.

    Raises:
        TypeError: If ``base_layer`` is not a linear layer.
    """

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(
                f"LoRA can only adapt linear layers, got {type(base_layer).__name__}; "
                "choose target_modules that name nn.Linear layers"
            )
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.r = r
        self.scaling = alpha / r
        factory = {"device": base_layer.weight.device, "dtype": _adapter_dtype(base_layer)}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Rebuilt from the adapter store on load; never part of a state dict.
        self.register_buffer("frozen_A", torch.zeros(0, self.in_features, **factory), persistent=False)
        self.register_buffer("frozen_B", torch.zeros(self.out_features, 0, **factory), persistent=False)
        # The frozen pair's product, set by ``set_frozen`` when a dense update is cheaper than the pair.
        self.register_buffer("frozen_delta", None, persistent=False)
        self.slot_enabled = True
        self.frozen_enabled = True
        # Taps where methods observe the slot's two outputs with forward hooks (MIGU ranks units by
        # them): ``slot_hidden`` sees ``A x`` (r units), ``slot_output`` sees ``B A x`` (d_out units),
        # unscaled. Identities without parameters: the state dict is unchanged.
        self.slot_hidden = nn.Identity()
        self.slot_output = nn.Identity()
        self.reset_slot()

    @property
    def frozen_rank(self) -> int:
        return self.frozen_A.shape[0]

    @torch.no_grad()
    def reset_slot(self, generator: Optional[torch.Generator] = None) -> None:
        """Re-initialise the trainable slot as LoRA does: A Kaiming-uniform, B zero (so Delta W = 0)."""
        if generator is not None and generator.device != self.lora_A.device:
            values = torch.empty(self.lora_A.shape, dtype=self.lora_A.dtype)
            nn.init.kaiming_uniform_(values, a=math.sqrt(5), generator=generator)
            self.lora_A.copy_(values)
        else:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        self.lora_B.zero_()

    def dense_pays(self, rank: int) -> bool:
        """Whether a dense d_out x d_in update costs less per token than a rank-``rank`` pair."""
        return rank * (self.in_features + self.out_features) > self.in_features * self.out_features

    @property
    def frozen_is_dense(self) -> bool:
        return self.frozen_delta is not None

    @torch.no_grad()
    def set_frozen(self, frozen_A: Tensor, frozen_B_scaled: Tensor, dense: Optional[bool] = None) -> None:
        """Replace the frozen pair (the scaling must already be folded into ``frozen_B_scaled``).

        Args:
            frozen_A: R x d_in, the finished tasks' A concatenated.
            frozen_B_scaled: d_out x R, their B concatenated, each task's scaling folded in.
            dense: Also keep ``frozen_B_scaled @ frozen_A`` as one dense matrix and apply that in the
                forward; ``None`` decides by cost (:meth:`dense_pays`), ``False`` keeps only the factors.
        """
        if frozen_A.shape[0] != frozen_B_scaled.shape[1] or frozen_A.shape[1] != self.in_features:
            raise ValueError(
                f"frozen pair shapes {tuple(frozen_A.shape)} / {tuple(frozen_B_scaled.shape)} do not fit "
                f"a {self.out_features} x {self.in_features} layer"
            )
        like = self.lora_A
        self.frozen_A = frozen_A.to(device=like.device, dtype=like.dtype).contiguous()
        self.frozen_B = frozen_B_scaled.to(device=like.device, dtype=like.dtype).contiguous()
        if dense is None:
            dense = self.dense_pays(self.frozen_rank)
        # In the adapters' precision (fp32, fp64 for fp64 bases), like the factor form it replaces.
        self.frozen_delta = (self.frozen_B @ self.frozen_A).contiguous() if dense and self.frozen_rank > 0 else None

    @torch.no_grad()
    def merge_into_base(self, A: Tensor, B_scaled: Tensor) -> None:
        """Add ``B_scaled @ A`` to the base weight in place (unquantized bases only)."""
        weight = self.base_layer.weight
        if type(self.base_layer) is not nn.Linear or weight.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            raise TypeError(
                f"cannot merge adapters into a {type(self.base_layer).__name__} base layer "
                f"(dtype {weight.dtype}); use consolidation='lowrank' for quantized models"
            )
        delta = B_scaled.to(device=weight.device, dtype=torch.float32) @ A.to(device=weight.device, dtype=torch.float32)
        weight.add_(delta.to(weight.dtype))

    def delta_weight(self) -> Tensor:
        """The slot's dense update ``scaling * B A`` (d_out x d_in), as the forward pass applies it."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        use_frozen = self.frozen_enabled and self.frozen_A.shape[0] > 0
        result, use_frozen = self._base_forward(x, use_frozen)
        if not (use_frozen or self.slot_enabled):
            return result
        x_lora = x.to(self.lora_A.dtype)
        update: Optional[Tensor] = None
        if use_frozen:
            update = self._frozen_update(x_lora)
        if self.slot_enabled:
            hidden = self.slot_hidden(nn.functional.linear(self.lora_dropout(x_lora), self.lora_A))
            slot = self.slot_output(nn.functional.linear(hidden, self.lora_B))
            slot = slot * self.scaling
            update = slot if update is None else update + slot
        return result + update.to(result.dtype)

    def _base_forward(self, x: Tensor, use_frozen: bool) -> tuple[Tensor, bool]:
        """``base(x)``, with a dense frozen update folded into the weight where that is exact enough.

        Returns the output and whether the frozen update is still to be added. A plain base in the
        adapters' own dtype (fp32, fp64) computes ``(W + Delta) x`` in one product instead of two
        (it differs from ``W x + Delta x`` by rounding only; training keeps ``W + Delta`` alive for
        the backward, the size of the weight). Low-precision or quantized bases keep ``Delta``
        apart, so it is not rounded to the base's precision.
        """
        base = self.base_layer
        delta = self.frozen_delta
        if use_frozen and delta is not None and type(base) is nn.Linear and base.weight.dtype == delta.dtype:
            return nn.functional.linear(x, base.weight + delta, base.bias), False
        return base(x), use_frozen

    def _frozen_update(self, x_lora: Tensor) -> Tensor:
        if self.frozen_delta is not None:
            return nn.functional.linear(x_lora, self.frozen_delta)
        return nn.functional.linear(nn.functional.linear(x_lora, self.frozen_A), self.frozen_B)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
            f"scaling={self.scaling:g}, frozen_rank={self.frozen_rank}, frozen_dense={self.frozen_is_dense}"
        )


def _adapter_dtype(base_layer: nn.Linear) -> torch.dtype:
    # Adapters train in fp32 whatever the base holds (bf16, fp16, int8, packed 4-bit), as PEFT does:
    # low-precision adapter weights lose the small updates an L1 penalty produces.
    return torch.float64 if base_layer.weight.dtype == torch.float64 else torch.float32

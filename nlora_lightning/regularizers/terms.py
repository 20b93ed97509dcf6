"""Regularizers over all adapted layers, and the registry that makes them configurable.

A regularizer is a function ``(layers: Sequence[LayerFactors], **options) -> Tensor``. Adding one
is one function plus one config entry::

    @register_regularizer("my_term")
    def my_term(layers, power: float = 2.0):
        return sum(layer.A.abs().pow(power).sum() for layer in layers)
"""

from __future__ import annotations

import inspect
from typing import Callable, Literal, Optional, Sequence

import torch
from torch import Tensor

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.lora.model import LayerFactors
from nlora_lightning.regularizers import functional as F

__all__ = ["REGULARIZERS", "Regularizer", "register_regularizer", "get_regularizer"]

Regularizer = Callable[..., Tensor]
REGULARIZERS: dict[str, Regularizer] = {}


def register_regularizer(name: str) -> Callable[[Regularizer], Regularizer]:
    def decorator(fn: Regularizer) -> Regularizer:
        if name in REGULARIZERS:
            raise ValueError(f"a regularizer named {name!r} is already registered")
        REGULARIZERS[name] = fn
        return fn

    return decorator


def get_regularizer(name: str) -> Regularizer:
    try:
        return REGULARIZERS[name]
    except KeyError:
        raise ConfigurationError(f"unknown regularizer {name!r}; registered: {sorted(REGULARIZERS)}") from None


def _total(values: list[Tensor], layers: Sequence[LayerFactors]) -> Tensor:
    if not values:
        raise ValueError("regularizers need at least one adapted layer")
    return torch.stack([v.float() for v in values]).sum()


@register_regularizer("nlora_l1")
def nlora_l1(
    layers: Sequence[LayerFactors],
    mode: Literal["delta_w", "official"] = "delta_w",
    blocked: bool = True,
    block_rows: Optional[int] = None,
    reduction: Literal["sum", "mean"] = "sum",
) -> Tensor:
    """N-LoRA's sparsity penalty, summed over layers.

    Args:
        mode: ``"delta_w"`` (paper): ``||B_t A_t||_1``, the entrywise L1 of the d_out x d_in update.
            ``"official"`` (released code): ``||A_t B_t||_1``, the r x r product; square layers only.
        blocked: Compute the ``delta_w`` form in row blocks with exact gradients (default) instead of
            materialising each d_out x d_in product.
        block_rows: Rows per block (default: ~1M entries per block).
        reduction: ``"sum"`` (paper, default) or ``"mean"``: each layer's L1 divided by its d_out x d_in,
            so that one lambda means the same per entry at any model width (``delta_w`` only). The
            layers' values are summed either way. The lambdas of the two reductions are not interchangeable.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"nlora_l1 reduction must be 'sum' or 'mean', got {reduction!r}")
    if mode == "delta_w":
        if blocked:
            values = [F.l1_of_product(l.B, l.A, block_rows) for l in layers]
        else:
            values = [F.l1_of_product_naive(l.B, l.A) for l in layers]
        if reduction == "mean":
            values = [value / (l.B.shape[0] * l.A.shape[1]) for value, l in zip(values, layers)]
    elif mode == "official":
        if reduction != "sum":
            raise ValueError("nlora_l1 reduction='mean' applies to mode='delta_w' only")
        values = [F.official_nlora_l1(l.A, l.B, l.name) for l in layers]
    else:
        raise ValueError(f"nlora_l1 mode must be 'delta_w' or 'official', got {mode!r}")
    return _total(values, layers)


@register_regularizer("olora_orthogonality")
def olora_orthogonality(layers: Sequence[LayerFactors]) -> Tensor:
    """O-LoRA's orthogonality penalty: ``sum_layers sum_{i<t} |A_i A_t^T|`` (entrywise)."""
    return _total([F.orthogonality_penalty(l.previous_A, l.A) for l in layers], layers)


@register_regularizer("l2")
def l2(layers: Sequence[LayerFactors]) -> Tensor:
    """O-LoRA's lambda_2 term: the sum of L2 norms of the new adapter's A and B matrices."""
    return _total([F.l2_penalty([l.A, l.B]) for l in layers], layers)


def validate_regularizer(name: str, layers: Sequence[LayerFactors], options: dict) -> None:
    """Fail before training for options that cannot work on these layers (e.g. official mode on GQA v_proj)."""
    fn = get_regularizer(name)
    params = inspect.signature(fn).parameters
    unknown = [k for k in options if k not in params or k == "layers"]
    if unknown:
        allowed = [p for p in params if p != "layers"]
        raise ConfigurationError(f"regularizer {name!r} has no option(s) {unknown}; its options are {allowed}")
    if name == "nlora_l1" and options.get("mode") == "official":
        for layer in layers:
            if layer.A.shape[1] != layer.B.shape[0]:
                F.official_nlora_l1(layer.A, layer.B, layer.name)  # raises with the layer named


# ----- later methods ---------------------------------------------------------------------------
# A term that only makes sense for some adapter modes says so with ``fn.adapters``; the module
# refuses other modes at construction (see ``nlora_lightning.losses.check_adapter_modes``).


@register_regularizer("ella")
def ella(layers: Sequence[LayerFactors], block_rows: Optional[int] = None) -> Tensor:
    """ELLA's penalty, summed over layers: ``||Delta W_t (elementwise) W_past||_F^2``.

    ``Delta W_t = (alpha / r) B_t A_t`` is the current task's update as the forward pass applies it and
    ``W_past = previous_B @ previous_A`` the sum of the finished tasks' applied updates (the frozen
    pair, kept as factors in every consolidation mode). Computed in row blocks with exact gradients
    (:func:`~nlora_lightning.regularizers.functional.ella_penalty`); zero at the first task.

    Args:
        block_rows: Rows per block (default: ~1M entries per block).
    """
    values = []
    for layer in layers:
        if layer.previous_B is None:
            raise ValueError(f"ella needs the finished tasks' B factors; layer {layer.name} has none (LayerFactors.previous_B)")
        values.append(F.ella_penalty(layer.B * layer.scaling, layer.A, layer.previous_B, layer.previous_A, block_rows))
    return _total(values, layers)


ella.adapters = ("per_task",)
ella.adapters_reason = "W_past is the sum of the earlier tasks' frozen adapters, and a shared adapter leaves none"

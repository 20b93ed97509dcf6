"""The regularizers' math as pure tensor functions (no modules, no state).

Shapes follow the LoRA convention: ``A`` is r x d_in (down-projection), ``B`` is d_out x r, and a
task's update is ``Delta W = B A`` (d_out x d_in). All functions use the raw factors, without the
``alpha / r`` scaling, as the paper's and the released code's penalties do.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_BLOCK_ELEMENTS",
    "l1_of_product",
    "l1_of_product_naive",
    "official_nlora_l1",
    "orthogonality_penalty",
    "l2_penalty",
]

# One block of B A holds at most this many entries (4 MiB in fp32): at d = 4096 that is 256 rows,
# 1/16 of the dense d x d update.
DEFAULT_BLOCK_ELEMENTS = 1 << 20


def l1_of_product_naive(B: Tensor, A: Tensor) -> Tensor:
    """Entrywise L1 norm of ``B @ A`` by materialising the product (reference implementation)."""
    return (B @ A).abs().sum()


class _GradientsInForward(torch.autograd.Function):
    """Base of the blocked penalties: ``forward`` saves the factors' gradients ``(grad_B, grad_A)``
    it accumulated while computing the value; ``backward`` only scales them."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        if not ctx.need_grad:
            raise RuntimeError(f"{ctx.penalty_name} was computed without gradients (inputs did not require grad)")
        grad_B, grad_A = ctx.saved_tensors
        return (grad_output * grad_B, grad_output * grad_A) + (None,) * ctx.num_constant_inputs


class _BlockedProductL1(_GradientsInForward):
    """||B A||_1 and its gradients in one pass over row blocks of B A.

    The gradients are accumulated while the value is computed (they need the same block of
    ``sign(B A)``), so the backward pass only scales them: the dense product is never held whole,
    and the work equals the naive form's three matrix products.
    """

    @staticmethod
    def forward(ctx, B: Tensor, A: Tensor, block_rows: int, need_grad: bool) -> Tensor:  # type: ignore[override]
        # Under autocast the products would come out in bf16/fp16 while the gradient buffers stay in
        # the factors' dtype; the penalty is cheap, so it runs at the factors' precision.
        with torch.autocast(device_type=B.device.type, enabled=False):
            dtype = torch.float32 if B.dtype in (torch.float16, torch.bfloat16) else B.dtype
            # One L1 per row, summed at the end: a whole-block vector_norm accumulates sequentially on
            # CPU (relative error 5e-3 over 4096 x 4096 entries in fp32); rows of d_in entries and a
            # final sum of d_out row norms are as accurate as the naive (B @ A).abs().sum().
            row_l1 = torch.empty(B.shape[0], dtype=dtype, device=B.device)
            grad_B = torch.empty_like(B) if need_grad else None
            grad_A = torch.zeros_like(A) if need_grad else None
            for start in range(0, B.shape[0], block_rows):
                B_block = B[start : start + block_rows]
                product = B_block @ A
                # no |product| temporary
                torch.linalg.vector_norm(product, ord=1, dim=1, dtype=dtype, out=row_l1[start : start + block_rows])
                if need_grad:
                    sign = product.sign_()  # sign(0) = 0, as autograd's abs gives
                    grad_B[start : start + block_rows] = sign @ A.transpose(0, 1)
                    grad_A.addmm_(B_block.transpose(0, 1), sign)
        if need_grad:
            ctx.save_for_backward(grad_B, grad_A)
        ctx.need_grad, ctx.penalty_name, ctx.num_constant_inputs = need_grad, "l1_of_product", 2
        return row_l1.sum()  # fp32 for half-precision factors: a bf16 sum of millions of entries is coarse


def l1_of_product(B: Tensor, A: Tensor, block_rows: Optional[int] = None) -> Tensor:
    """Entrywise L1 norm ``||B A||_1`` without materialising the d_out x d_in product.

    Exact value and exact (sub)gradients: ``grad_B = sign(BA) A^T``, ``grad_A = B^T sign(BA)``,
    with ``sign(0) = 0`` as autograd gives for ``abs``. Peak extra memory is one block of rows
    (``block_rows`` x d_in, default: as many rows as fit ``DEFAULT_BLOCK_ELEMENTS`` entries), plus
    gradient buffers the size of the factors.

    Args:
        B: d_out x r.
        A: r x d_in.
        block_rows: Rows of ``B A`` computed at once.

    Raises:
        ValueError: If the inner dimensions differ or ``block_rows`` is not positive.

    Example:
        >>> B, A = torch.randn(6, 2), torch.randn(2, 5)
        >>> torch.allclose(l1_of_product(B, A), (B @ A).abs().sum())
        True
    """
    if B.dim() != 2 or A.dim() != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(f"l1_of_product needs B (d_out x r) and A (r x d_in), got {tuple(B.shape)} and {tuple(A.shape)}")
    if block_rows is None:
        block_rows = max(1, DEFAULT_BLOCK_ELEMENTS // max(1, A.shape[1]))
    if block_rows <= 0:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    need_grad = torch.is_grad_enabled() and (A.requires_grad or B.requires_grad)
    return _BlockedProductL1.apply(B, A, block_rows, need_grad)


def official_nlora_l1(A: Tensor, B: Tensor, layer_name: str = "layer") -> Tensor:
    """The released N-LoRA code's penalty: entrywise L1 of the r x r product ``A @ B``.

    ``A @ B`` (r x d_in times d_out x r) is defined only when d_in == d_out; the released code
    adapted only such layers. A non-square layer is refused rather than silently transposed.

    Raises:
        ValueError: If the layer is not square (the message names the layer and its shape).
    """
    if A.shape[1] != B.shape[0]:
        raise ValueError(
            f"N-LoRA mode='official' computes ||A B||_1, which is undefined for the non-square layer "
            f"{layer_name} (d_out x d_in = {B.shape[0]} x {A.shape[1]}); use mode='delta_w', or restrict "
            "target_modules to square layers (e.g. q_proj)"
        )
    return (A @ B).abs().sum()


def orthogonality_penalty(previous_A: Tensor, A: Tensor) -> Tensor:
    """O-LoRA's penalty for one layer: ``sum_i |A_i A_t^T|`` entrywise over earlier tasks i.

    With the earlier tasks' A matrices concatenated along the rank (``previous_A``, R x d_in) this
    is a single product: ``|previous_A @ A^T|.sum()``. Zero when there is no earlier task.
    """
    if previous_A.shape[0] == 0:
        return A.new_zeros(())
    return (previous_A.to(A.dtype) @ A.transpose(0, 1)).abs().sum()


def l2_penalty(tensors: Iterable[Tensor]) -> Tensor:
    """O-LoRA's lambda_2 term: the sum of the (non-squared) L2 norms of the given tensors."""
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    if not norms:
        raise ValueError("l2_penalty needs at least one tensor")
    return torch.stack(norms).sum()


# ----- later methods: ELLA, EWC-LoRA, EWC, LwF -------------------------------------------------
# Appended as one block (with its own ``__all__`` extension) so the functions above stay untouched.

__all__ += [
    "weighted_squared_product",
    "weighted_squared_product_naive",
    "ella_penalty",
    "ella_penalty_naive",
    "ewc_penalty",
    "distillation_kl",
]


class _BlockedWeightedSquare(_GradientsInForward):
    """``sum_ij M_ij (B A)_ij^2`` and its gradients in one pass over row blocks of ``B A``.

    ``weight_rows(start, stop)`` returns rows ``start:stop`` of the weight ``M`` (a slice of a dense
    matrix, or a block computed from factors), so neither ``B A`` nor ``M`` is ever held whole. ``M``
    is treated as a constant (no gradient flows into it).
    """

    @staticmethod
    def forward(ctx, B: Tensor, A: Tensor, weight_rows, block_rows: int, need_grad: bool) -> Tensor:  # type: ignore[override]
        with torch.autocast(device_type=B.device.type, enabled=False):
            accumulate = torch.float32 if B.dtype in (torch.float16, torch.bfloat16) else B.dtype
            total = torch.zeros((), dtype=accumulate, device=B.device)
            grad_B = torch.empty_like(B) if need_grad else None
            grad_A = torch.zeros_like(A) if need_grad else None
            for start in range(0, B.shape[0], block_rows):
                stop = min(start + block_rows, B.shape[0])
                B_block = B[start:stop]
                product = B_block @ A
                weighted = weight_rows(start, stop).to(product.dtype) * product  # M * P
                total += (weighted * product).sum(dtype=accumulate)
                if need_grad:
                    weighted.mul_(2)  # d/dP sum M P^2 = 2 M P
                    grad_B[start:stop] = weighted @ A.transpose(0, 1)
                    grad_A.addmm_(B_block.transpose(0, 1), weighted)
        if need_grad:
            ctx.save_for_backward(grad_B, grad_A)
        ctx.need_grad, ctx.penalty_name, ctx.num_constant_inputs = need_grad, "the weighted product penalty", 3
        return total


def _check_factors(B: Tensor, A: Tensor, what: str) -> None:
    if B.dim() != 2 or A.dim() != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(f"{what} needs B (d_out x r) and A (r x d_in), got {tuple(B.shape)} and {tuple(A.shape)}")


def _block_rows(block_rows: Optional[int], d_in: int) -> int:
    if block_rows is None:
        return max(1, DEFAULT_BLOCK_ELEMENTS // max(1, d_in))
    if block_rows <= 0:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    return block_rows


def _weighted_square(B: Tensor, A: Tensor, weight_rows, block_rows: int) -> Tensor:
    need_grad = torch.is_grad_enabled() and (A.requires_grad or B.requires_grad)
    return _BlockedWeightedSquare.apply(B, A, weight_rows, block_rows, need_grad)


def weighted_squared_product_naive(B: Tensor, A: Tensor, weight: Tensor) -> Tensor:
    """``sum(weight * (B @ A)**2)`` by materialising the product (reference implementation)."""
    return (weight * (B @ A).square()).sum()


def weighted_squared_product(B: Tensor, A: Tensor, weight: Tensor, block_rows: Optional[int] = None) -> Tensor:
    """``sum_ij weight_ij (B A)_ij^2`` in row blocks: EWC-LoRA's Fisher-weighted penalty on an update.

    Exact value and gradients (``grad_B = 2 (weight * BA) A^T``, ``grad_A = B^T 2 (weight * BA)``);
    ``weight`` (d_out x d_in, e.g. a diagonal Fisher) is a constant. Peak extra memory: three blocks
    of ``block_rows`` x d_in plus gradient buffers the size of the factors.

    Raises:
        ValueError: If the shapes do not fit or ``block_rows`` is not positive.

    Example:
        >>> B, A, M = torch.randn(6, 2), torch.randn(2, 5), torch.rand(6, 5)
        >>> torch.allclose(weighted_squared_product(B, A, M), (M * (B @ A) ** 2).sum())
        True
    """
    _check_factors(B, A, "weighted_squared_product")
    if weight.shape != (B.shape[0], A.shape[1]):
        raise ValueError(f"weight must be d_out x d_in = {B.shape[0]} x {A.shape[1]}, got {tuple(weight.shape)}")
    weight = weight.detach()
    return _weighted_square(B, A, lambda start, stop: weight[start:stop], _block_rows(block_rows, A.shape[1]))


def ella_penalty_naive(B: Tensor, A: Tensor, past_B: Tensor, past_A: Tensor) -> Tensor:
    """``||(B @ A) * (past_B @ past_A)||_F^2`` with both d_out x d_in matrices materialised (reference)."""
    return ((B @ A) * (past_B @ past_A)).square().sum()


def ella_penalty(B: Tensor, A: Tensor, past_B: Tensor, past_A: Tensor, block_rows: Optional[int] = None) -> Tensor:
    """ELLA's penalty for one layer: ``||Delta W_t (elementwise) W_past||_F^2`` in row blocks.

    ``Delta W_t = B A`` is the current task's update and ``W_past = past_B past_A`` the sum of the
    earlier tasks' updates (their factors concatenated along the rank). The penalty equals
    ``sum_ij W_past_ij^2 (B A)_ij^2``: a weighted square whose weight rows are computed block by block
    from the factors, so neither matrix is held whole (exact gradients for ``B`` and ``A``; the past
    is constant). Zero when there is no earlier task.

    Raises:
        ValueError: If the shapes do not fit or ``block_rows`` is not positive.

    Example:
        >>> B, A, Bp, Ap = torch.randn(6, 2), torch.randn(2, 5), torch.randn(6, 4), torch.randn(4, 5)
        >>> torch.allclose(ella_penalty(B, A, Bp, Ap), ((B @ A) * (Bp @ Ap)).square().sum())
        True
    """
    _check_factors(B, A, "ella_penalty")
    _check_factors(past_B, past_A, "ella_penalty (past update)")
    if past_B.shape[0] != B.shape[0] or past_A.shape[1] != A.shape[1]:
        raise ValueError(f"the past update ({past_B.shape[0]} x {past_A.shape[1]}) and the current one "
                         f"({B.shape[0]} x {A.shape[1]}) differ in shape")
    if past_A.shape[0] == 0:
        return A.new_zeros(())
    past_B, past_A = past_B.detach().to(B.dtype), past_A.detach().to(A.dtype)
    return _weighted_square(B, A, lambda start, stop: (past_B[start:stop] @ past_A).square_(), _block_rows(block_rows, A.shape[1]))


def ewc_penalty(parameters: Sequence[Tensor], anchors: Sequence[Tensor], fishers: Sequence[Tensor]) -> Tensor:
    """EWC's quadratic penalty ``sum_k sum F_k (theta_k - theta*_k)^2`` (Kirkpatrick et al., 2017, without 1/2).

    Raises:
        ValueError: If the three sequences differ in length or a shape differs.
    """
    if not (len(parameters) == len(anchors) == len(fishers)) or not parameters:
        raise ValueError(f"ewc_penalty needs as many anchors and Fisher tensors as parameters (at least one), got "
                         f"{len(parameters)}, {len(anchors)}, {len(fishers)}")
    terms = []
    for theta, anchor, fisher in zip(parameters, anchors, fishers):
        if theta.shape != anchor.shape or theta.shape != fisher.shape:
            raise ValueError(f"ewc_penalty: parameter {tuple(theta.shape)}, anchor {tuple(anchor.shape)} and Fisher "
                             f"{tuple(fisher.shape)} must have one shape")
        terms.append((fisher.detach() * (theta - anchor.detach()).square()).sum())
    return torch.stack(terms).sum()


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """LwF's distillation term: mean over rows of ``KL(softmax(teacher / T) || softmax(student / T))``.

    Rows are output positions (one distribution over the vocabulary each). The KL equals Li & Hoiem's
    cross-entropy between the softened distributions minus the teacher's entropy, a constant: the
    same gradient, and 0 when the student matches the teacher. Computed in float32; no ``T^2`` factor
    (Li & Hoiem use none). Zero for zero rows.

    Raises:
        ValueError: If the shapes differ or the temperature is not positive.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    if student_logits.numel() == 0:
        return student_logits.sum().float()
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    rows = student.reshape(-1, student.shape[-1]).shape[0]
    return torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="sum") / rows

"""Parameter collision and orthogonality of per-task LoRA updates, as pure tensor functions.

Every task update is given as low-rank factors ``(A, B_scaled)`` with ``Delta W = B_scaled @ A``
(``A``: k x d_in, ``B_scaled``: d_out x k), where ``B_scaled`` already includes the LoRA scaling
``alpha / r``: that is the update the model actually applies, so all figures here describe the
applied update (reference, section 4).

Dense ``d_out x d_in`` matrices are formed only where the metric is entrywise (collision,
sparsity); overlap, Frobenius and nuclear norms come from k x k products of the factors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_TAU",
    "PairwiseAnalysis",
    "collision_rate",
    "dense_update",
    "frobenius_norm",
    "nuclear_norm",
    "pairwise_analysis",
    "sparsity",
    "update_overlap",
]

DEFAULT_TAU = 0.01
"""Default support threshold: an entry counts as non-zero when ``|Delta W[a, b]| > 0.01 * max |Delta W|``.

Float updates are never exactly zero (every optimizer step touches every entry of ``B A``), so the
paper's "non-zero" needs a threshold. Taking it relative to each update's own largest magnitude
makes it independent of the learning rate, ``alpha / r`` and the layer's scale, so layers, tasks
and methods are comparable: an entry below 1 % of the layer's largest change is treated as untouched.
"""

Factors = tuple[Tensor, Tensor]


def _check_factors(A: Tensor, B_scaled: Tensor) -> None:
    if A.dim() != 2 or B_scaled.dim() != 2 or A.shape[0] != B_scaled.shape[1]:
        raise ValueError(
            f"expected A (k x d_in) and B_scaled (d_out x k) with the same k, got {tuple(A.shape)} and {tuple(B_scaled.shape)}"
        )


def _check_tau(tau: float) -> None:
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau is a fraction of the largest magnitude and must lie in [0, 1), got {tau!r}")


def dense_update(A: Tensor, B_scaled: Tensor) -> Tensor:
    """The applied update ``Delta W = B_scaled @ A`` (d_out x d_in); ``B_scaled`` includes ``alpha / r``."""
    _check_factors(A, B_scaled)
    return B_scaled @ A


def _support(dw: Tensor, tau: float) -> Tensor:
    """Boolean mask of entries with ``|dw| > tau * max |dw|`` (empty for an all-zero matrix)."""
    magnitude = dw.abs()
    return magnitude > tau * magnitude.max()


def collision_rate(dw_i: Tensor, dw_j: Tensor, tau: float = DEFAULT_TAU) -> Tensor:
    """Share of entries where both updates are non-zero (the paper's parameter collision).

    An entry is non-zero in ``dw_i`` when ``|dw_i| > tau * max |dw_i|`` (and likewise for ``dw_j``
    with its own maximum); see :data:`DEFAULT_TAU`. A zero matrix has no entries above threshold.

    Args:
        dw_i, dw_j: Dense updates of the same shape (see :func:`dense_update`).
        tau: Threshold relative to each update's largest magnitude, in [0, 1).

    Returns:
        A 0-d tensor in [0, 1].
    """
    _check_tau(tau)
    if dw_i.shape != dw_j.shape:
        raise ValueError(f"updates of one layer must have the same shape, got {tuple(dw_i.shape)} and {tuple(dw_j.shape)}")
    return (_support(dw_i, tau) & _support(dw_j, tau)).double().mean()


def sparsity(dw: Tensor, tau: float = DEFAULT_TAU) -> Tensor:
    """Share of entries at or below ``tau * max |dw|`` (1.0 for an all-zero update)."""
    _check_tau(tau)
    return 1.0 - _support(dw, tau).double().mean()


def _gram(A: Tensor, B_scaled: Tensor) -> tuple[Tensor, Tensor]:
    # float64: the k x k products are cheap, and traces of products lose digits in float32.
    A, B = A.double(), B_scaled.double()
    return A @ A.T, B.T @ B


def frobenius_norm(A: Tensor, B_scaled: Tensor) -> Tensor:
    """``||B_scaled A||_F`` from ``trace((B^T B)(A A^T))``, without forming the dense update."""
    _check_factors(A, B_scaled)
    gram_A, gram_B = _gram(A, B_scaled)
    return (gram_B * gram_A).sum().clamp(min=0).sqrt()  # trace(X Y) = sum(X * Y^T), both symmetric


def update_overlap(A_i: Tensor, B_i: Tensor, A_j: Tensor, B_j: Tensor) -> Tensor:
    """Normalised overlap ``||dW_i^T dW_j||_F / (||dW_i||_F ||dW_j||_F)`` of two updates, in [0, 1].

    Computed from the factors: ``dW_i^T dW_j = A_i^T M A_j`` with ``M = B_i^T B_j``, so
    ``||dW_i^T dW_j||_F^2 = trace(M^T G_i M G_j)`` with ``G = A A^T`` (k x k products only).

    0 means the updates write into orthogonal output subspaces; 1 is reached only by rank-1 updates
    with the same output direction. Identical updates of rank k give
    ``sqrt(sum s^4) / sum s^2`` (``1 / sqrt(k)`` for k equal singular values). Entrywise-disjoint
    supports (no collision) make the Frobenius inner product ``<dW_i, dW_j>`` zero, the paper's
    orthogonality, but not necessarily this overlap (two updates sharing an output row still
    overlap). Returns 0 when either update is zero.

    Args:
        A_i, B_i: Factors of update i (``B_i`` scaled).
        A_j, B_j: Factors of update j; same d_out and d_in as update i, any rank.
    """
    _check_factors(A_i, B_i)
    _check_factors(A_j, B_j)
    if A_i.shape[1] != A_j.shape[1] or B_i.shape[0] != B_j.shape[0]:
        raise ValueError(f"updates of one layer must have the same shape, got "
                         f"{B_i.shape[0]}x{A_i.shape[1]} and {B_j.shape[0]}x{A_j.shape[1]}")
    gram_A_i, gram_B_i = _gram(A_i, B_i)
    gram_A_j, gram_B_j = _gram(A_j, B_j)
    norm_sq_i = (gram_B_i * gram_A_i).sum()
    norm_sq_j = (gram_B_j * gram_A_j).sum()
    if norm_sq_i <= 0 or norm_sq_j <= 0:
        return torch.zeros((), dtype=torch.float64)
    cross = B_i.double().T @ B_j.double()  # M, k_i x k_j
    overlap_sq = torch.trace(cross.T @ gram_A_i @ cross @ gram_A_j).clamp(min=0)
    return (overlap_sq / (norm_sq_i * norm_sq_j)).sqrt().clamp(max=1.0)


def nuclear_norm(A: Tensor, B_scaled: Tensor) -> Tensor:
    """Sum of the singular values of ``B_scaled A``, from QR of ``B`` and ``A^T`` and an SVD of the small core.

    ``B = Q_B R_B`` and ``A^T = Q_A R_A`` give ``B A = Q_B (R_B R_A^T) Q_A^T`` with orthonormal
    ``Q``'s, so the singular values are those of the k x k core ``R_B R_A^T``.
    """
    _check_factors(A, B_scaled)
    _, r_B = torch.linalg.qr(B_scaled.double())
    _, r_A = torch.linalg.qr(A.double().T)
    return torch.linalg.svdvals(r_B @ r_A.T).sum()


@dataclass
class PairwiseAnalysis:
    """Collision, overlap and per-update statistics of a set of task updates.

    Matrices are indexed like ``tasks`` and ``layers``; "mean" means the unweighted mean over layers.

    Attributes:
        tasks: Task (stage) ids, sorted.
        layers: Layer names, in the order of the input.
        tau: Support threshold used (relative to each update's largest magnitude).
        collision_per_layer: ``L x T x T`` collision rates (diagonal: share of non-zero entries).
        overlap_per_layer: ``L x T x T`` normalised overlaps (see :func:`update_overlap`).
        sparsity: ``T x L`` share of (near-)zero entries of each update.
        nuclear_norm: ``T x L`` nuclear norms.
        fro_norm: ``T x L`` Frobenius norms.
    """

    tasks: list[int]
    layers: list[str]
    tau: float
    collision_per_layer: Tensor
    overlap_per_layer: Tensor
    sparsity: Tensor
    nuclear_norm: Tensor
    fro_norm: Tensor
    _upper: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.tasks)
        self._upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)

    @property
    def collision(self) -> Tensor:
        """``T x T`` collision rates, mean over layers."""
        return self.collision_per_layer.mean(dim=0)

    @property
    def overlap(self) -> Tensor:
        """``T x T`` overlaps, mean over layers."""
        return self.overlap_per_layer.mean(dim=0)

    def _pair_mean(self, matrix: Tensor) -> float:
        pairs = matrix[self._upper]
        return float(pairs.mean()) if pairs.numel() else float("nan")

    @property
    def collision_mean(self) -> float:
        """Headline collision: mean over task pairs i < j of the layer-averaged rate (NaN for one task)."""
        return self._pair_mean(self.collision)

    @property
    def overlap_mean(self) -> float:
        """Headline overlap: mean over task pairs i < j of the layer-averaged overlap (NaN for one task)."""
        return self._pair_mean(self.overlap)

    @property
    def nuclear_norm_mean(self) -> float:
        """Mean nuclear norm over all task updates and layers."""
        return float(self.nuclear_norm.mean()) if self.nuclear_norm.numel() else float("nan")


def pairwise_analysis(
    factors_by_task: Mapping[int, Mapping[str, Factors]],
    tau: float = DEFAULT_TAU,
    device: Optional[Union[str, torch.device]] = None,
) -> PairwiseAnalysis:
    """Collision and overlap between every pair of task updates, per layer and averaged over layers.

    Memory: dense updates are formed one layer and one pair at a time (a LLaMA-7B q/v update is
    4096 x 4096); overlap, nuclear and Frobenius norms come from the factors.

    Args:
        factors_by_task: ``{task: {layer: (A, B_scaled)}}``; every task must cover the same layers
            with the same shapes. ``B_scaled`` includes ``alpha / r``.
        tau: Support threshold relative to each update's largest magnitude (see :data:`DEFAULT_TAU`).
        device: Where the dense products are computed (default: where the factors are).

    Returns:
        A :class:`PairwiseAnalysis`.

    Raises:
        ValueError: For no tasks, tasks with different layers or shapes, or ``tau`` outside [0, 1).
    """
    _check_tau(tau)
    tasks = sorted(factors_by_task)
    if not tasks:
        raise ValueError("pairwise_analysis needs at least one task update")
    layers = list(factors_by_task[tasks[0]])
    for task in tasks:
        if set(factors_by_task[task]) != set(layers):
            raise ValueError(f"task {task} has layers {sorted(factors_by_task[task])}, task {tasks[0]} has {sorted(layers)}")
    T, L = len(tasks), len(layers)
    collision = torch.zeros(L, T, T, dtype=torch.float64)
    overlap = torch.zeros(L, T, T, dtype=torch.float64)
    stats = {key: torch.zeros(T, L, dtype=torch.float64) for key in ("sparsity", "nuclear_norm", "fro_norm")}

    def factors(task: int, layer: str) -> Factors:
        A, B = factors_by_task[task][layer]
        return A.to(device=device, dtype=torch.float32), B.to(device=device, dtype=torch.float32)

    for l, layer in enumerate(layers):
        for a, task_i in enumerate(tasks):
            A_i, B_i = factors(task_i, layer)
            support_i = _support(dense_update(A_i, B_i), tau)  # the dense update itself is freed here
            stats["sparsity"][a, l] = 1.0 - support_i.double().mean().cpu()
            stats["nuclear_norm"][a, l] = nuclear_norm(A_i, B_i).cpu()
            stats["fro_norm"][a, l] = frobenius_norm(A_i, B_i).cpu()
            collision[l, a, a] = support_i.double().mean().cpu()
            overlap[l, a, a] = update_overlap(A_i, B_i, A_i, B_i).cpu()
            for b in range(a + 1, T):
                A_j, B_j = factors(tasks[b], layer)
                if A_j.shape[1] != A_i.shape[1] or B_j.shape[0] != B_i.shape[0]:
                    raise ValueError(f"layer {layer!r}: task {tasks[b]} has shape {B_j.shape[0]}x{A_j.shape[1]}, "
                                     f"task {task_i} has {B_i.shape[0]}x{A_i.shape[1]}")
                support_j = _support(dense_update(A_j, B_j), tau)
                collision[l, a, b] = collision[l, b, a] = (support_i & support_j).double().mean().cpu()
                overlap[l, a, b] = overlap[l, b, a] = update_overlap(A_i, B_i, A_j, B_j).cpu()
                del support_j
            del support_i
    return PairwiseAnalysis(tasks, layers, tau, collision, overlap, stats["sparsity"], stats["nuclear_norm"], stats["fro_norm"])

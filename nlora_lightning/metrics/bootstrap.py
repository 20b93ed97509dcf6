"""Bootstrap confidence intervals over test samples, as pure functions of per-sample correctness.

A run's test set is a sample of each task's population, so AA and BWT carry sampling noise. The
bootstrap resamples, per task and with replacement, the task's test samples ``num_resamples``
times and recomputes the metric on each resample; the interval is the percentile interval of
those values. One resample of a task uses the same sample indices for every evaluation of that
task (after its own training, after the last stage; method A and method B), which keeps the
pairing that BWT and paired method differences rely on.

Inputs are per task: a ``(k, n)`` tensor of 0/1 correctness, ``k`` evaluations of the same ``n``
samples in the same order. Defaults: 1000 resamples, seed 0, 95 % percentile interval.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "bootstrap_cl_intervals",
    "paired_difference_interval",
    "percentile_interval",
    "resampled_accuracies",
]

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95


def _check_tasks(correct: Sequence[Tensor], rows: Optional[int] = None) -> list[Tensor]:
    if len(correct) == 0:
        raise ValueError("the bootstrap needs at least one task")
    checked = []
    for j, c in enumerate(correct):
        c = torch.as_tensor(c)
        if c.dim() == 1:
            c = c.unsqueeze(0)
        if c.dim() != 2 or c.shape[1] == 0:
            raise ValueError(f"task {j}: expected a (evaluations, samples) tensor with samples > 0, got shape {tuple(c.shape)}")
        if rows is not None and c.shape[0] != rows:
            raise ValueError(f"task {j}: expected {rows} evaluation rows, got {c.shape[0]}")
        checked.append(c.double())
    return checked


def resampled_accuracies(correct: Sequence[Tensor], num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> list[Tensor]:
    """Accuracies of every evaluation on each bootstrap resample of its task's samples.

    Args:
        correct: Per task, a ``(k, n)`` (or ``(n,)``) tensor of 0/1 correctness: ``k`` evaluations
            of the task's same ``n`` samples.
        num_resamples: Resamples ``B``.
        seed: Seeds one generator that draws the tasks' indices in order.

    Returns:
        Per task, a ``(B, k)`` tensor: row b holds each evaluation's accuracy on resample b, which
        uses the same sample indices for all ``k`` evaluations.

    Raises:
        ValueError: For no tasks, an empty task or a non-positive ``num_resamples``.
    """
    if num_resamples <= 0:
        raise ValueError(f"num_resamples must be positive, got {num_resamples}")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for c in _check_tasks(correct):
        n = c.shape[1]
        indices = torch.randint(n, (num_resamples, n), generator=generator)
        out.append(c[:, indices].mean(-1).T)
    return out


def percentile_interval(values: Tensor, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of ``values`` (linear interpolation, as numpy's default)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1 - confidence) / 2
    q = torch.quantile(values.double().flatten(), torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


def bootstrap_cl_intervals(
    final: Sequence[Tensor],
    own: Optional[Sequence[Tensor]] = None,
    num_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Optional[tuple[float, float]]]:
    """Percentile intervals of AA and BWT of one run.

    Args:
        final: Per task j (all T tasks), correctness ``(n_j,)`` after the last stage: AA's entries R[T-1][j].
        own: Per task j < T-1, correctness on the same samples right after training task j: R[j][j].
            ``None`` (joint training, or one task): no BWT interval.
        num_resamples, seed, confidence: See :func:`resampled_accuracies` and :func:`percentile_interval`.

    Returns:
        ``{"AA": (lo, hi), "BWT": (lo, hi) or None}``.

    Example:
        >>> ones = torch.ones(10)
        >>> bootstrap_cl_intervals([ones, ones], [ones])
        {'AA': (1.0, 1.0), 'BWT': (0.0, 0.0)}
    """
    final = _check_tasks(final, rows=1)
    if own is not None and len(own) not in (0, len(final) - 1):
        raise ValueError(f"own holds {len(own)} tasks; BWT needs one per task before the last ({len(final) - 1})")
    with_bwt = own is not None and len(own) > 0
    columns = list(final)
    if with_bwt:
        own = _check_tasks(own, rows=1)
        for j, o in enumerate(own):
            if o.shape != final[j].shape:
                raise ValueError(f"task {j}: {o.shape[1]} samples after its own training vs {final[j].shape[1]} after the last stage")
            columns[j] = torch.cat([final[j], o])
    resampled = resampled_accuracies(columns, num_resamples, seed)
    aa = torch.stack([r[:, 0] for r in resampled], dim=1).mean(1)
    result: dict[str, Optional[tuple[float, float]]] = {"AA": percentile_interval(aa, confidence), "BWT": None}
    if with_bwt:
        bwt = torch.stack([r[:, 0] - r[:, 1] for r in resampled[:-1]], dim=1).mean(1)
        result["BWT"] = percentile_interval(bwt, confidence)
    return result


def paired_difference_interval(
    a: Sequence[Tensor],
    b: Sequence[Tensor],
    num_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float]:
    """Interval of ``mean(a) - mean(b)`` over paired test samples (e.g. AA of two methods).

    ``a[g]`` and ``b[g]`` are the correctness of two runs on the same samples of group g (a task of
    one seed); the statistic is the mean over groups of the accuracy difference, so with groups =
    tasks of several seeds it is the difference of the seed-mean AA. Only the test-sample noise is
    resampled: the seeds are held fixed.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} groups for the first run(s) vs {len(b)} for the second")
    a_checked, b_checked = _check_tasks(a, rows=1), _check_tasks(b, rows=1)
    for g, (x, y) in enumerate(zip(a_checked, b_checked)):
        if x.shape != y.shape:
            raise ValueError(f"group {g}: {x.shape[1]} vs {y.shape[1]} samples; a paired bootstrap needs the same samples")
    resampled = resampled_accuracies([torch.cat([x, y]) for x, y in zip(a_checked, b_checked)], num_resamples, seed)
    difference = torch.stack([r[:, 0] - r[:, 1] for r in resampled], dim=1).mean(1)
    return percentile_interval(difference, confidence)

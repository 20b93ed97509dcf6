"""Summaries over seeds: mean, sample standard deviation and a Student-t interval of the mean.

With the handful of seeds a study can afford (n = 3 to 5), a bootstrap over seeds has almost no
resamples to draw from and understates the spread; the t interval is the standard choice for a
small sample of roughly normal values (paired differences of two methods over the same seeds).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["SeedSummary", "summarize_seeds", "t_critical_95", "t_interval_95"]

# Two-sided 95 % critical values of Student's t (the 0.975 quantile) for 1..30 degrees of freedom.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z_975 = 1.959964


def t_critical_95(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (table to 30, then Cornish-Fisher)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = _Z_975  # Cornish-Fisher expansion of t in powers of 1/df: below 1e-3 off for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


class SeedSummary(tuple):
    """``(mean, std, n)``; ``std`` is the sample standard deviation (``None`` for n = 1)."""

    __slots__ = ()

    def __new__(cls, mean: float, std: Optional[float], n: int) -> "SeedSummary":
        return super().__new__(cls, (mean, std, n))

    mean = property(lambda self: self[0])
    std = property(lambda self: self[1])
    n = property(lambda self: self[2])


def summarize_seeds(values: Sequence[float]) -> SeedSummary:
    """Mean, sample standard deviation (n - 1 in the denominator) and count of ``values``.

    Raises:
        ValueError: For no values.
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return SeedSummary(mean, std, n)


def t_interval_95(values: Sequence[float]) -> Optional[tuple[float, float]]:
    """95 % Student-t interval of the mean of ``values``; ``None`` with fewer than two values.

    Example:
        >>> t_interval_95([1.0, 2.0, 3.0])  # doctest: +ELLIPSIS
        (-0.4843..., 4.4843...)
    """
    summary = summarize_seeds(values)
    if summary.n < 2:
        return None
    half = t_critical_95(summary.n - 1) * summary.std / math.sqrt(summary.n)
    return summary.mean - half, summary.mean + half

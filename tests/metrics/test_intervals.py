import math
import statistics

import pytest

from nlora_lightning.metrics.intervals import summarize_seeds, t_critical_95, t_interval_95


def test_summary_matches_the_statistics_module():
    values = [0.52, 0.57, 0.49]
    summary = summarize_seeds(values)
    assert summary == (pytest.approx(statistics.mean(values)), pytest.approx(statistics.stdev(values)), 3)
    assert summarize_seeds([0.5]) == (0.5, None, 1)
    with pytest.raises(ValueError, match="no values"):
        summarize_seeds([])


def test_t_interval_by_hand():
    lo, hi = t_interval_95([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)  # t_{0.975, 2} = 4.303, std 1
    assert (lo, hi) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert t_interval_95([0.4]) is None


def test_t_critical_values_decrease_to_the_normal_quantile():
    assert t_critical_95(1) == 12.706 and t_critical_95(30) == 2.042
    assert t_critical_95(40) == pytest.approx(2.021, abs=1e-3) and t_critical_95(120) == pytest.approx(1.980, abs=1e-3)
    assert t_critical_95(10_000) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t_critical_95(0)

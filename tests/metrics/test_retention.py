import pytest

from nlora_lightning.metrics.retention import retention_summary


def test_change_per_task_and_mean_over_tasks_with_both_scores():
    summary = retention_summary({"a": 0.5, "b": 0.2, "c": float("nan")}, {"a": 0.4, "b": 0.35, "c": 0.1})
    assert summary["tasks"]["a"] == {"base": 0.5, "final": 0.4, "change": pytest.approx(-0.1)}
    assert summary["tasks"]["c"] == {"base": None, "final": 0.1, "change": None}  # not evaluated: left out
    assert summary["mean_change"] == pytest.approx((-0.1 + 0.15) / 2)


def test_no_held_out_tasks_gives_none():
    assert retention_summary({}, {}) is None
    assert retention_summary({"a": None}, {"a": 0.3})["mean_change"] is None

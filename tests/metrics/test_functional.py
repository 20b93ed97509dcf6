import math

import pytest
import torch

from nlora_lightning.metrics import functional as M

NAN = float("nan")


def test_normalize_answer_lowercases_strips_punctuation_and_collapses_spaces():
    assert M.normalize_answer("  The Very   Positive!! ") == "the very positive"
    assert M.normalize_answer("Science or Technology.") == "science or technology"
    assert M.exact_match(" positive\n", "Positive")
    assert not M.exact_match("a positive", "positive")  # articles are kept


def test_metrics_on_hand_computed_three_task_matrix():
    acc = torch.tensor([
        [0.90, 0.20, 0.10],
        [0.70, 0.80, 0.30],
        [0.60, 0.75, 0.85],
    ])
    zero_shot = torch.tensor([0.05, 0.10, 0.20])
    assert M.average_accuracy(acc).item() == pytest.approx((0.60 + 0.75 + 0.85) / 3)
    assert M.backward_transfer(acc).item() == pytest.approx(((0.60 - 0.90) + (0.75 - 0.80)) / 2)
    # forgetting: task 0 max(0.9, 0.7) - 0.6 = 0.3; task 1 max(0.8) - 0.75 = 0.05
    assert M.forgetting(acc).item() == pytest.approx((0.30 + 0.05) / 2)
    # FWT: (R[0][1] - b1 + R[1][2] - b2) / 2 = (0.2 - 0.1 + 0.3 - 0.2) / 2
    assert M.forward_transfer(acc, zero_shot).item() == pytest.approx(0.10)
    assert M.own_task_accuracy(acc).item() == pytest.approx((0.90 + 0.80 + 0.85) / 3)


def test_own_task_accuracy_needs_one_row_per_task():
    assert math.isnan(M.own_task_accuracy(torch.tensor([[0.7, 0.9, 0.8]])))  # multi-task: one row, no stage per task
    assert math.isnan(M.own_task_accuracy(torch.tensor([[0.9, NAN], [0.8, NAN]])))  # a diagonal entry never evaluated


def test_forgetting_uses_max_over_intermediate_rows():
    acc = torch.tensor([[0.5, NAN, NAN], [0.9, 0.6, NAN], [0.4, 0.6, 0.7]])
    assert M.forgetting(acc).item() == pytest.approx(((0.9 - 0.4) + 0.0) / 2)


def test_single_task_has_no_bwt_or_forgetting():
    acc = torch.tensor([[0.8]])
    metrics = M.continual_metrics(acc, torch.tensor([0.1]))
    assert metrics["AA"].item() == pytest.approx(0.8)
    assert math.isnan(metrics["BWT"]) and math.isnan(metrics["forgetting"]) and math.isnan(metrics["FWT"])


def test_fwt_null_without_baseline_and_mtl_reports_only_aa():
    acc = torch.tensor([[0.9, 0.2], [0.8, 0.7]])
    assert math.isnan(M.forward_transfer(acc, None))
    mtl = M.continual_metrics(torch.tensor([[0.7, 0.9, 0.8]]))
    assert mtl["AA"].item() == pytest.approx(0.8)
    assert all(math.isnan(mtl[k]) for k in ("BWT", "forgetting", "FWT"))


def test_fwt_partway_uses_available_rows():
    acc = torch.tensor([[0.9, 0.3]])  # after task 0, with the next task evaluated
    assert M.forward_transfer(acc, torch.tensor([0.0, 0.1])).item() == pytest.approx(0.2)


def test_rejects_non_matrix():
    with pytest.raises(ValueError, match="2-D"):
        M.average_accuracy(torch.tensor([0.1, 0.2]))

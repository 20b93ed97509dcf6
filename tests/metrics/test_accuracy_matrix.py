import math

import pytest
import torch

from nlora_lightning.metrics import AccuracyMatrix


def test_counts_accumulate_and_unevaluated_entries_are_nan():
    metric = AccuracyMatrix(2, 3)
    metric.update(0, 0, correct=3, total=4)
    metric.update(0, 0, correct=1, total=4)
    metric.update(1, 2, correct=torch.tensor(5), total=torch.tensor(5))
    acc = metric.compute()
    assert acc[0, 0].item() == pytest.approx(0.5)
    assert acc[1, 2].item() == 1.0
    assert math.isnan(acc[0, 1])


def test_rejects_empty_shape():
    with pytest.raises(ValueError):
        AccuracyMatrix(0, 2)


def test_states_reduce_by_sum():
    metric = AccuracyMatrix(1, 1)
    assert metric._reductions["correct"].__name__ in ("dim_zero_sum", "sum")

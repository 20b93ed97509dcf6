import numpy as np
import pytest
import torch

from nlora_lightning.metrics.bootstrap import (
    bootstrap_cl_intervals,
    paired_difference_interval,
    percentile_interval,
    resampled_accuracies,
)


def correctness(n, p, seed):
    return (torch.rand(n, generator=torch.Generator().manual_seed(seed)) < p).double()


def test_resampled_accuracies_match_a_direct_loop_with_the_same_indices():
    tasks = [torch.stack([correctness(7, 0.6, 1), correctness(7, 0.3, 2)]), correctness(5, 0.5, 3)]
    resampled = resampled_accuracies(tasks, num_resamples=50, seed=4)
    generator = torch.Generator().manual_seed(4)  # the documented draw: one generator, tasks in order
    for task, result in zip(tasks, resampled):
        task = task if task.dim() == 2 else task[None]
        indices = torch.randint(task.shape[1], (50, task.shape[1]), generator=generator).numpy()
        rows = task.numpy()
        expected = np.array([[rows[k][idx].mean() for k in range(rows.shape[0])] for idx in indices])
        np.testing.assert_allclose(result.numpy(), expected)


def test_percentile_interval_matches_numpy():
    values = torch.randn(1001, generator=torch.Generator().manual_seed(0))
    lo, hi = percentile_interval(values, 0.9)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(values.numpy(), [5, 95])))


def test_known_cases():
    ones, zeros = torch.ones(20), torch.zeros(20)
    assert bootstrap_cl_intervals([ones, zeros], [ones]) == {"AA": (0.5, 0.5), "BWT": (0.0, 0.0)}
    assert bootstrap_cl_intervals([zeros, ones], [ones])["BWT"] == (-1.0, -1.0)
    assert bootstrap_cl_intervals([ones], None)["BWT"] is None  # one task (or joint): no BWT
    same = correctness(30, 0.5, 0)
    assert paired_difference_interval([same], [same]) == (0.0, 0.0)  # paired: identical runs differ by exactly 0


def test_three_informative_tasks_match_a_direct_bootstrap_loop():
    # Tasks of different sizes and accuracies, every evaluation different from the others: dropping a
    # task, reusing one task's indices for another or unpairing BWT's two evaluations changes the result.
    final = [correctness(11, 0.3, 21), correctness(13, 0.8, 22), correctness(17, 0.55, 23)]
    own = [correctness(11, 0.7, 24), correctness(13, 0.6, 25)]
    assert all(0 < float(c.mean()) < 1 for c in final + own)
    result = bootstrap_cl_intervals(final, own, num_resamples=300, seed=7)
    generator = torch.Generator().manual_seed(7)  # the documented draw: one generator, tasks in order
    aa, bwt = np.zeros(300), np.zeros(300)
    for j, task in enumerate(final):
        indices = torch.randint(len(task), (300, len(task)), generator=generator).numpy()
        after_last = task.numpy()[indices].mean(1)
        aa += after_last / 3
        if j < 2:
            bwt += (after_last - own[j].numpy()[indices].mean(1)) / 2
    assert result["AA"] == pytest.approx(tuple(np.percentile(aa, [2.5, 97.5])))
    assert result["BWT"] == pytest.approx(tuple(np.percentile(bwt, [2.5, 97.5])))
    assert result["BWT"][0] < 0 < result["AA"][0]  # informative: the tasks drop, and the interval shows it


def test_bwt_interval_keeps_the_pairing():
    # The same sample is right after its own training and after the last stage: BWT is 0 on every
    # resample. Unpaired resampling would give a wide interval.
    own = correctness(40, 0.5, 5)
    assert bootstrap_cl_intervals([own, correctness(40, 0.5, 6)], [own])["BWT"] == (0.0, 0.0)


def test_aa_interval_width_matches_the_binomial_standard_error():
    n, p = 400, 0.7
    c = torch.zeros(n)
    c[: int(n * p)] = 1
    lo, hi = bootstrap_cl_intervals([c], num_resamples=4000, seed=1)["AA"]
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.01) and hi == pytest.approx(p + half, abs=0.01)


def test_seeded():
    tasks = [correctness(25, 0.5, 8), correctness(25, 0.7, 9)]
    assert bootstrap_cl_intervals(tasks, tasks[:1], seed=3) == bootstrap_cl_intervals(tasks, tasks[:1], seed=3)
    assert bootstrap_cl_intervals(tasks, seed=3)["AA"] != bootstrap_cl_intervals(tasks, seed=4)["AA"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: resampled_accuracies([], 10), "at least one task"),
        (lambda: resampled_accuracies([torch.ones(3)], 0), "num_resamples must be positive"),
        (lambda: bootstrap_cl_intervals([torch.ones(3), torch.ones(3)], [torch.ones(4)]), "4 samples after its own training vs 3"),
        (lambda: paired_difference_interval([torch.ones(3)], [torch.ones(2)]), "same samples"),
        (lambda: percentile_interval(torch.ones(3), 1.5), "confidence"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()

"""data/replay.py: which buffered samples of earlier tasks each stage replays."""

from collections import Counter

import pytest

from nlora_lightning.data.replay import ReplayConfig, draw_replay

LABELS = [["pos", "neg"] * 10, ["a", "b", "c"] * 6 + ["a", "a"], ["x"] * 12, ["y"] * 40]


def test_without_a_ratio_each_stage_replays_every_earlier_buffer_stratified():
    draws = draw_replay(LABELS, ReplayConfig(samples_per_task=4), seed=0)
    assert sorted(draws) == [1, 2, 3]  # the first task has nothing to replay
    assert Counter(task for task, _ in draws[3]) == {0: 4, 1: 4, 2: 4}
    assert set(draws[1]) < set(draws[2]) < set(draws[3])  # a task's buffer is drawn once and kept
    assert Counter(LABELS[0][index] for task, index in draws[1]) == {"pos": 2, "neg": 2}
    assert all(index < len(LABELS[task]) for task, index in draws[3])


def test_a_ratio_takes_that_many_spread_evenly_over_earlier_tasks():
    draws = draw_replay(LABELS, ReplayConfig(samples_per_task=6, ratio=0.25), seed=0)
    assert len(draws[1]) == round(0.25 * 20) == 5 and {task for task, _ in draws[1]} == {0}
    assert len(draws[2]) == 3 and Counter(task for task, _ in draws[2]) == {0: 2, 1: 1}
    assert Counter(task for task, _ in draws[3]) == {0: 4, 1: 3, 2: 3}  # round-robin: 10 of the 18 buffered
    assert draw_replay(LABELS, ReplayConfig(samples_per_task=2, ratio=10.0), seed=0)[2] == \
        draw_replay(LABELS, ReplayConfig(samples_per_task=2), seed=0)[2]  # never more than the buffers hold


def test_draws_are_seeded():
    config = ReplayConfig(samples_per_task=4, ratio=0.5)
    assert draw_replay(LABELS, config, seed=3) == draw_replay(LABELS, config, seed=3)
    assert draw_replay(LABELS, config, seed=3) != draw_replay(LABELS, config, seed=4)


@pytest.mark.parametrize("options, message", [({"samples_per_task": 0}, "samples_per_task must be positive"),
                                              ({"ratio": -0.5}, "ratio must be >= 0")])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ReplayConfig(**options)

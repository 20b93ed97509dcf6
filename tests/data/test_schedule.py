"""data/schedule.py: the stage structure and the columns each moment of a fit evaluates."""

import pytest

from nlora_lightning.data.schedule import sanity_check_tasks, stage_end_tasks, task_stages


def test_stages_are_one_task_each_in_order_or_one_joint_stage():
    assert task_stages(4, joint=False) == [[0], [1], [2], [3]]
    assert task_stages(4, joint=True) == [[0, 1, 2, 3]]


def test_full_schedule_fills_the_lower_triangle_and_the_last_stage_adds_held_out_tasks():
    stages = task_stages(3, joint=False)
    assert [stage_end_tasks(stages, s, "full", False, 2) for s in range(3)] == [{0}, {0, 1}, {0, 1, 2, 3, 4}]


def test_diagonal_final_evaluates_each_task_after_its_own_stage_and_everything_at_the_end():
    stages = task_stages(4, joint=False)
    assert [stage_end_tasks(stages, s, "diagonal_final", False, 0) for s in range(4)] == [{0}, {1}, {2}, {0, 1, 2, 3}]


def test_forward_transfer_adds_the_next_stage_except_after_the_last():
    stages = task_stages(3, joint=False)
    assert [stage_end_tasks(stages, s, "full", True, 1) for s in range(3)] == [{0, 1}, {0, 1, 2}, {0, 1, 2, 3}]
    assert stage_end_tasks(task_stages(3, joint=True), 0, "diagonal_final", True, 1) == {0, 1, 2, 3}


def test_sanity_check_evaluates_the_sequence_for_zero_shot_and_held_out_tasks_for_retention():
    assert sanity_check_tasks(3, 2, zero_shot=False, retention=False) == set()
    assert sanity_check_tasks(3, 2, zero_shot=True, retention=False) == {0, 1, 2}
    assert sanity_check_tasks(3, 2, zero_shot=False, retention=True) == {3, 4}


def test_an_unknown_schedule_or_a_stage_outside_the_sequence_is_refused():
    with pytest.raises(ValueError, match="eval_schedule must be one of"):
        stage_end_tasks(task_stages(2, False), 0, "sparse", False, 0)
    with pytest.raises(ValueError, match="stage 2 is outside a sequence of 2"):
        stage_end_tasks(task_stages(2, False), 2, "full", False, 0)

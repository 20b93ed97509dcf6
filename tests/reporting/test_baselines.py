import pytest

from nlora_lightning.reporting.baselines import run_baselines


def rec(stage, task, sample_id, score, label):
    return {"stage": stage, "task": task, "sample_id": sample_id, "prediction": "?", "label": label, "score": score}


def records():
    # task a: 4 test samples, 3 of class "x"; trained at stage 0, learned perfectly (then forgotten at stage 1)
    # task b: 4 test samples, 2 of "u"; trained at stage 1, right on exactly the majority class's samples
    a_labels, b_labels = ["x", "x", "x", "y"], ["u", "v", "u", "v"]
    lines = [rec(0, "a", i, 1.0, label) for i, label in enumerate(a_labels)]
    lines += [rec(1, "a", i, 0.0, label) for i, label in enumerate(a_labels)]
    lines += [rec(1, "b", i, float(label == "u"), label) for i, label in enumerate(b_labels)]
    return lines


def test_baselines_per_task_their_aa_and_the_never_learned_tasks():
    result = run_baselines(records(), ["a", "b"], [[0], [1]], [["x", "x", "y"], ["v", "u", "u"]], [2, 3],
                           num_resamples=200, seed=0)
    a, b = result["baselines"]["tasks"]["a"], result["baselines"]["tasks"]["b"]
    assert (a["chance"], a["majority_answer"], a["majority"], a["own"]) == (0.5, "x", 0.75, 1.0)
    assert (b["chance"], b["majority_answer"], b["majority"], b["own"]) == (pytest.approx(1 / 3), "u", 0.5, 0.5)
    assert result["AA_chance"] == pytest.approx((0.5 + 1 / 3) / 2) and result["AA_majority"] == pytest.approx(0.625)
    # a's own score (stage 0, not the forgotten stage 1) is 1.0 on every resample: above 0.75; b equals its majority
    assert a["own_ci95"] == [1.0, 1.0] and not a["never_learned"]
    assert b["never_learned"] and result["never_learned"] == ["b"]


def test_joint_training_uses_the_one_stage_and_free_text_tasks_have_no_chance():
    lines = [rec(0, "a", 0, 1.0, "x"), rec(0, "a", 1, 1.0, "y"), rec(0, "g", 0, 0.0, "some text")]
    result = run_baselines(lines, ["a", "g"], [[0, 1]], [["x"], ["other text"]], [2, None], num_resamples=0)
    tasks = result["baselines"]["tasks"]
    assert tasks["a"]["own"] == 1.0 and tasks["g"]["chance"] is None and result["AA_chance"] is None
    assert tasks["g"]["never_learned"] and tasks["a"]["never_learned"] is False and tasks["g"]["own_ci95"] is None


def test_a_task_not_evaluated_yet_has_no_majority_and_no_flag():
    result = run_baselines(records()[:4], ["a", "b"], [[0], [1]], [["x"], ["u"]], [2, 2], num_resamples=0)
    assert result["baselines"]["tasks"]["b"]["majority"] is None and result["baselines"]["tasks"]["b"]["never_learned"] is None
    assert result["AA_majority"] is None and result["never_learned"] == []
    with pytest.raises(ValueError, match="2 tasks, 1 training answer lists"):
        run_baselines([], ["a", "b"], [[0], [1]], [["x"]], [2, 2])

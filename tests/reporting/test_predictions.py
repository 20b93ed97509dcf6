import json
from dataclasses import dataclass
from typing import Optional

import pytest

from nlora_lightning.evaluation import SamplePrediction
from nlora_lightning.reporting.predictions import (
    PREDICTIONS_FILE,
    aligned_scores,
    convert_legacy_predictions,
    keep_stages,
    main,
    prediction_record,
    read_predictions,
    replace_stage,
    sample_score,
    scores_by_id,
    write_predictions,
)


def record(stage, task, sample_id, score, prediction="p", label="p"):
    return {"stage": stage, "task": task, "sample_id": sample_id, "prediction": prediction, "label": label, "score": score}


def test_one_file_ordered_by_stage_zero_shot_first(tmp_path):
    write_predictions(tmp_path, [record(1, "a", 3, 1.0), record(None, "a", 3, 0.0), record(0, "b", 9, 1.0), record(0, "a", 2, 0.0)])
    lines = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    assert [(r["stage"], r["task"], r["sample_id"]) for r in lines] == [(None, "a", 3), (0, "b", 9), (0, "a", 2), (1, "a", 3)]
    assert list(lines[0]) == ["stage", "task", "sample_id", "prediction", "label", "score"]
    assert read_predictions(tmp_path) == lines


def test_replace_stage_keeps_other_stages_and_keep_stages_drops_the_rest(tmp_path):
    write_predictions(tmp_path, [record(None, "a", 0, 0.0), record(0, "a", 0, 1.0), record(1, "a", 0, 1.0)])
    replace_stage(tmp_path, 1, [record(1, "a", 0, 0.0), record(1, "b", 4, 1.0)])
    assert [(r["stage"], r["task"], r["score"]) for r in read_predictions(tmp_path)] == [
        (None, "a", 0.0), (0, "a", 1.0), (1, "a", 0.0), (1, "b", 1.0)]
    keep_stages(tmp_path, [0, None])
    assert [r["stage"] for r in read_predictions(tmp_path)] == [None, 0]
    keep_stages(tmp_path, [])
    assert read_predictions(tmp_path) == []
    keep_stages(tmp_path / "none", [0])  # no file: nothing created
    replace_stage(tmp_path / "none", 0, [])  # no predictions (a foreign module's evaluation): no file either
    assert not (tmp_path / "none").exists()
    replace_stage(tmp_path, 0, [record(0, "a", 0, 1.0)])
    replace_stage(tmp_path, 0, [])  # an evaluation without predictions still removes the stage's old lines
    assert read_predictions(tmp_path) == []


def test_scores_are_aligned_by_sample_id_and_unpairable_evaluations_give_none(tmp_path):
    records = [record(2, "a", 9, 0.0), record(2, "a", 3, 1.0), record(0, "a", 3, 1.0), record(0, "a", 9, 0.5), record(0, "b", 1, 1.0)]
    assert scores_by_id(records, 0, "a") == {3: 1.0, 9: 0.5}
    assert aligned_scores([scores_by_id(records, 2, "a"), scores_by_id(records, 0, "a")]).tolist() == [[1.0, 0.0], [1.0, 0.5]]
    assert aligned_scores([scores_by_id(records, 2, "a"), scores_by_id(records, 0, "b")]) is None  # other samples
    assert aligned_scores([scores_by_id(records, 2, "a"), scores_by_id(records, 1, "a")]) is None  # not evaluated


def test_score_comes_from_the_sample_or_from_correctness():
    sample = SamplePrediction(4, "yes", "no", False)
    assert prediction_record(3, "boolq", sample) == record(3, "boolq", 4, 0.0, "yes", "no")
    assert sample_score(SamplePrediction(4, "no", "no", True)) == 1.0

    @dataclass(frozen=True)
    class Scored:  # an evaluation with its own per-sample metric (e.g. ROUGE-L)
        sample_id: Optional[int]
        prediction: str
        label: str
        correct: bool
        score: float

    assert sample_score(Scored(1, "a b", "a c", False, 0.5)) == 0.5


def test_malformed_line_is_named(tmp_path):
    (tmp_path / PREDICTIONS_FILE).write_text(json.dumps(record(0, "a", 1, 1.0)) + '\n{"sample_id": 1}\n')
    with pytest.raises(ValueError, match=r"predictions.jsonl:2: expected an object with 'stage', 'task'"):
        read_predictions(tmp_path)
    (tmp_path / PREDICTIONS_FILE).write_text("{oops\n")
    with pytest.raises(ValueError, match=r"predictions.jsonl:1: not JSON"):
        read_predictions(tmp_path)


def write_legacy_run(directory):
    (directory / "predictions").mkdir(parents=True)
    (directory / "cl_metrics.json").write_text(json.dumps({"tasks": ["a", "b"]}))
    (directory / "run_info.json").write_text(json.dumps({"held_out_tasks": ["h"]}))
    files = {"stage1_task0.jsonl": [(7, False), (2, True)], "stage0_task0.jsonl": [(2, True), (7, True)],
             "stage1_task2.jsonl": [(5, True)], "zeroshot_task1.jsonl": [(1, False)]}
    for name, rows in files.items():
        (directory / "predictions" / name).write_text("".join(
            json.dumps({"sample_id": i, "prediction": "x", "label": "x" if c else "y", "correct": c}) + "\n" for i, c in rows))


def test_old_runs_are_read_and_converted_without_loss(tmp_path):
    run = tmp_path / "old"
    write_legacy_run(run)
    old = read_predictions(run)  # read from predictions/ while there is no predictions.jsonl
    assert [(r["stage"], r["task"], r["sample_id"], r["score"]) for r in old] == [
        (None, "b", 1, 0.0), (0, "a", 2, 1.0), (0, "a", 7, 1.0), (1, "a", 2, 1.0), (1, "a", 7, 0.0), (1, "h", 5, 1.0)]
    assert old[4]["label"] == "y" and old[4]["prediction"] == "x"
    assert main([str(run)]) == 0
    assert not (run / "predictions").exists() and read_predictions(run) == old
    with pytest.raises(FileNotFoundError, match="no predictions/ folder"):
        convert_legacy_predictions(run)


def test_conversion_refuses_to_overwrite_and_names_a_bad_file(tmp_path, capsys):
    run = tmp_path / "old"
    write_legacy_run(run)
    (run / PREDICTIONS_FILE).write_text("")
    with pytest.raises(FileExistsError, match="exists already"):
        convert_legacy_predictions(run)
    (run / PREDICTIONS_FILE).unlink()
    (run / "predictions" / "stage3_task9.jsonl").write_text("")
    assert main([str(run)]) == 1
    assert "stage3_task9.jsonl: task column 9, but" in capsys.readouterr().err
    assert (run / "predictions").is_dir() and not (run / PREDICTIONS_FILE).exists()  # nothing deleted

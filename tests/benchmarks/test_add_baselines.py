"""benchmarks/tools/add_baselines.py on a hand-written old run over the toy benchmark."""

import json
from pathlib import Path

import pytest
import yaml

from nlora_lightning.data.benchmark import load_task
from nlora_lightning.data.sampling import stratified_subsample
from nlora_lightning.data.toy import TOY_BENCHMARK_DIR
from nlora_lightning.reporting.predictions import write_predictions

REPO = Path(__file__).resolve().parents[2]
TASKS = ["reviews", "topics"]


@pytest.fixture(scope="module")
def tool(load_script):
    return load_script("benchmarks/tools/add_baselines.py")


def old_run(directory: Path, with_predictions: bool = True) -> Path:
    directory.mkdir()
    data = {"tasks": TASKS, "preset": None, "data_dir": str(TOY_BENCHMARK_DIR), "max_train_samples": 40, "seed": 3,
            "on_unknown_label": "error", "joint": False}
    (directory / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    (directory / "cl_metrics.json").write_text(json.dumps({"tasks": TASKS, "acc_matrix": [[1.0, None], [0.5, 0.25]], "AA": 0.375,
                                                          "bootstrap": {"resamples": 100, "seed": 1}, "eval_schedule": "full"}))
    if with_predictions:
        records = []
        for stage in (0, 1):
            for j, task in enumerate(TASKS[: stage + 1]):
                test = load_task(TOY_BENCHMARK_DIR, task).records["test"][:8]
                # reviews learned at stage 0 (every answer right); topics answered right only twice at its stage
                right = [True] * 8 if (stage, task) == (0, "reviews") else [i < 2 for i in range(8)]
                records += [{"stage": stage, "task": task, "sample_id": i, "prediction": r["label"] if ok else "?",
                             "label": r["label"], "score": float(ok)} for i, (r, ok) in enumerate(zip(test, right))]
        write_predictions(directory, records)
    return directory


def test_baselines_are_added_from_the_redrawn_training_labels(tool, tmp_path):
    run = old_run(tmp_path / "run")
    before = json.loads((run / "cl_metrics.json").read_text())
    assert tool.main([str(run)]) == 0
    after = json.loads((run / "cl_metrics.json").read_text())
    assert {k: after[k] for k in before} == before  # nothing else changes
    for j, task in enumerate(TASKS):
        data = load_task(TOY_BENCHMARK_DIR, task)
        labels = [r["label"] for r in data.records["train"]]
        train = [labels[i] for i in stratified_subsample(labels, 40, 3 + 7919 * j)]  # the data module's draw
        answer = min(set(train), key=lambda a: (-train.count(a), a))
        test = [r["label"] for r in data.records["test"][:8]]
        entry = after["baselines"]["tasks"][task]
        assert (entry["majority_answer"], entry["majority"]) == (answer, sum(t == answer for t in test) / 8)
        assert entry["chance"] == 1 / len(data.labels) and after["baselines"]["resamples"] == 100
    assert after["baselines"]["tasks"]["reviews"]["never_learned"] is False and after["never_learned"] == ["topics"]
    assert "**Never learned: 1 of 2 tasks** (topics)" in (run / "report.md").read_text()


def test_a_run_without_predictions_is_skipped_and_left_alone(tool, tmp_path, capsys):
    run = old_run(tmp_path / "run", with_predictions=False)
    before = (run / "cl_metrics.json").read_text()
    assert tool.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "[skip]" in out and "no per-sample predictions" in out
    assert (run / "cl_metrics.json").read_text() == before and not (run / "report.md").exists()

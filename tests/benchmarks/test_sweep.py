"""benchmarks/sweep.py: the pick rule with ties, refusal of test-scored runs, and an end-to-end sweep on
configs/tiny.yaml whose selection provably scored only carved-out train.json samples."""

import json
from pathlib import Path

import pytest

from nlora_lightning.data.splits import select_task_rows
from nlora_lightning.data.toy import TOY_BENCHMARK_DIR

REPO = Path(__file__).resolve().parents[2]
NLORA_KEY = ["--key", "model.method_defaults.nlora_l1/delta_w", "--template", '{"weight": {value}}']


@pytest.fixture(scope="module")
def sweep(load_script):
    return load_script("benchmarks/sweep.py")


def tiny_args(out, *extra):
    return ["--method", "nlora", "--model", str(REPO / "configs" / "tiny.yaml"), "--preset", "none", *NLORA_KEY,
            "--validation-samples", "8", "--max-train-samples", "16", "--max-eval-samples", "8", "--out", str(out), *extra]


def test_the_best_validation_aa_wins_and_ties_go_to_the_weaker_setting(sweep):
    assert sweep.choose({"1e-4": 0.50, "1e-3": 0.62, "1e-2": 0.40}) == "1e-3"
    assert sweep.choose({"1e-2": 0.6, "1e-3": 0.6}) == "1e-3"
    assert sweep.choose({"1e-4": 0.6, "1e-3": 0.6 + 1e-12}) == "1e-4"  # a float-rounding difference is a tie
    assert sweep.choose({"0.1": 0.6, "0.3": 0.6, "0.5": 0.59}, weaker="larger") == "0.3"  # e.g. MIGU: more kept gradient
    assert sweep.choose({"1e-4": 0.6000001, "1e-3": 0.6}) == "1e-4"
    assert sweep.choose({"1e-4": 0.6, "1e-3": 0.6000001}) == "1e-3"  # a real difference is not a tie
    with pytest.raises(ValueError, match="no grid value"):
        sweep.choose({})


def fake_run(directory: Path, aa: float, evaluate_on: str):
    directory.mkdir(parents=True)
    info = {"method": "nlora", "status": "finished", "hyperparameters": {"evaluate_on": evaluate_on}}
    (directory / "run_info.json").write_text(json.dumps(info))
    metrics = {"tasks": ["a", "b"], "acc_matrix": [[aa, None], [aa, aa]], "AA": aa, "BWT": 0.0}
    (directory / "cl_metrics.json").write_text(json.dumps(metrics))


def test_table_only_applies_the_rule_and_refuses_a_selection_run_that_scored_test(sweep, tmp_path, capsys):
    out = tmp_path / "sweep"
    for value, aa in (("1e-3", 0.7), ("1e-2", 0.7), ("1e-1", 0.4)):
        fake_run(out / "selection" / f"value_{value}" / "nlora-seed0", aa, "validation")
    fake_run(out / "test" / "value_1e-3" / "nlora-seed0", 0.65, "test")
    fake_run(out / "test" / "value_1e-1" / "nlora-seed0", 0.35, "test")
    assert sweep.main(tiny_args(out, "--grid", "1e-1", "1e-2", "1e-3", "--default", "1e-1", "--table-only")) == 0
    table = (out / "sweep.md").read_text()
    assert "| 1e-3 | 70.00 | 70.00 | 0.00 | yes |" in table and "| 1e-2 | 70.00 | 70.00 | 0.00 |  |" in table
    assert "| default | 1e-1 | 35.00 | 35.00 | 0.00 |" in table and "| chosen | 1e-3 | 65.00 | 65.00 | 0.00 |" in table
    # a selection run that scored the test split must never take part in the choice
    info = out / "selection" / "value_1e-2" / "nlora-seed0" / "run_info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "hyperparameters": {"evaluate_on": "test"}}))
    capsys.readouterr()
    assert sweep.main(tiny_args(out, "--grid", "1e-1", "1e-2", "1e-3", "--table-only")) == 2
    assert "scored the 'test' split, the sweep needs 'validation'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--grid", "1e-3", "1e-3"], "repeats a value"),
    (["--grid", "small"], "must be numbers"),
    (["--grid", "1e-3", "--template", "{}"], "no {value} placeholder"),
    (["--grid", "1e-3", "--method", "nlroa"], "no config 'nlroa'"),
])
def test_bad_sweeps_are_refused_before_any_run(sweep, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        sweep.main(tiny_args(tmp_path / "sweep", *argv))
    assert message in capsys.readouterr().err and not (tmp_path / "sweep").exists()


def toy_file(task: str, split: str) -> list[dict]:
    return json.loads(next(TOY_BENCHMARK_DIR.glob(f"*/{task}/{split}.json")).read_text())


@pytest.mark.slow
def test_selection_scores_carved_train_samples_only_and_the_test_rerun_scores_test(sweep, tmp_path):
    out = tmp_path / "sweep"
    assert sweep.main(tiny_args(out, "--grid", "0.01", "--default", "0.01")) == 0
    table = (out / "sweep.md").read_text()
    assert "| 0.01 |" in table and "| default | 0.01 |" in table and "| chosen | 0.01 |" in table
    for split, folder in (("validation", "selection"), ("test", "test")):
        run = out / folder / "value_0.01" / "nlora-seed0"
        info = json.loads((run / "run_info.json").read_text())["hyperparameters"]
        assert info["evaluate_on"] == split and info["validation_samples"] == 8
        assert info["methods"][0]["weight"] == 0.01  # the grid value reached the run
        assert f"| evaluate on | {split} |" in (run / "report.md").read_text()  # the report names the scored split
        for index, task in enumerate(["reviews", "topics"]):
            train, test = toy_file(task, "train"), toy_file(task, "test")
            rows = select_task_rows(index, 0, [r["label"] for r in train], None, 16, None, 8, "validation")
            for path in run.glob(f"predictions/stage*_task{index}.jsonl"):
                predictions = [json.loads(line) for line in path.read_text().splitlines()]
                ids = [p["sample_id"] for p in predictions]
                if split == "validation":  # exactly the carved ids, each a train.json record never trained on
                    assert sorted(ids) == rows.evaluation and not set(ids) & set(rows.train)
                    assert all(p["label"] == train[p["sample_id"]]["label"] for p in predictions)
                else:
                    assert len(ids) == 8 and all(p["label"] == test[p["sample_id"]]["label"] for p in predictions)


def test_an_option_sweep_reaches_the_fit_command_through_the_template(sweep, tmp_path):
    # MIGU's kept-gradient ratio: a list-valued option, swept with the same tool as a weight
    template = '[{"name": "migu", "options": {"top_ratio": {value}, "skip_first_task": true}}]'
    args = sweep.parse(tiny_args(tmp_path / "sweep", "--method", "migu", "--key", "model.methods", "--template",
                                 template, "--grid", "0.1", "0.3", "--weaker", "larger"))
    command = sweep.compare_methods.fit_command(sweep.fit_args(args, "0.3", "validation"), args.method, 0,
                                                tmp_path / "run", "empty")
    assert '--model.methods=[{"name": "migu", "options": {"top_ratio": 0.3, "skip_first_task": true}}]' in command
    assert command[-2:] == ["--data.validation_samples=8", "--data.evaluate_on=validation"]
    assert any(part.endswith("configs/methods/migu.yaml") for part in command)


def test_jobs_train_a_stages_runs_side_by_side(sweep, tmp_path, monkeypatch):
    import subprocess
    import threading

    barrier, values = threading.Barrier(2, timeout=10), []

    def run(command, stdout, stderr, env):
        values.append(next(a for a in command if a.startswith("--model.method_defaults")))
        barrier.wait()  # both grid values' selection runs are in flight at once
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(sweep.compare_methods.subprocess, "run", run)
    assert sweep.main(tiny_args(tmp_path / "sweep", "--grid", "1e-3", "1e-2", "--jobs", "2")) == 0
    assert sorted(values) == ['--model.method_defaults.nlora_l1/delta_w={"weight": 1e-2}',
                              '--model.method_defaults.nlora_l1/delta_w={"weight": 1e-3}']
    assert "(no choice yet" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_selection_only_chooses_and_starts_no_test_run(sweep, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    for value, aa in (("1e-3", 0.7), ("1e-2", 0.6)):
        fake_run(out / "selection" / f"value_{value}" / "nlora-seed0", aa, "validation")
    started = []
    monkeypatch.setattr(sweep.compare_methods.subprocess, "run", lambda command, **_: started.append(command))
    assert sweep.main(tiny_args(out, "--grid", "1e-3", "1e-2", "--default", "1e-2", "--selection-only")) == 0
    assert started == [] and not (out / "test").exists()
    table = (out / "sweep.md").read_text()
    assert "| 1e-3 | 70.00 | 70.00 | 0.00 | yes |" in table and "Chosen: **1e-3**." in table and "## Test" not in table
    assert "[chosen] model.method_defaults.nlora_l1/delta_w = 1e-3" in capsys.readouterr().out

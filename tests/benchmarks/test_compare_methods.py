"""benchmarks/compare_methods.py end to end on configs/tiny.yaml: runs, table, restart, bad input."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare_methods(load_script):
    return load_script("benchmarks/compare_methods.py")


def tiny_args(out: Path, *methods: str) -> list[str]:
    return ["--model", str(REPO / "configs" / "tiny.yaml"), "--preset", "none", "--methods", *methods,
            "--max-train-samples", "16", "--max-eval-samples", "8", "--batch-size", "8", "--max-length", "256",
            "--nlora-lambda", "0.05", "--out", str(out)]


@pytest.mark.slow
def test_runs_each_method_writes_the_table_and_keeps_finished_runs(compare_methods, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare_methods.main(tiny_args(out, "inclora", "nlora")) == 0
    table = (out / "comparison.md").read_text()
    assert "| inclora-seed0 | inclora |" in table and "| nlora-seed0 | nlora |" in table
    assert "Training time of the 2 runs below" in table and "--preset none" in table
    nlora_info = json.loads((out / "nlora-seed0" / "run_info.json").read_text())
    assert nlora_info["status"] == "finished"
    assert nlora_info["hyperparameters"]["methods"][0]["weight"] == 0.05  # --nlora-lambda reached the run
    assert json.loads((out / "inclora-seed0" / "run_info.json").read_text())["hyperparameters"]["methods"] == []

    capsys.readouterr()
    assert compare_methods.main(tiny_args(out, "inclora", "nlora")) == 0
    printed = capsys.readouterr().out
    assert "[keep] inclora-seed0" in printed and "[keep] nlora-seed0" in printed and "[run]" not in printed
    assert json.loads((out / "nlora-seed0" / "run_info.json").read_text())["finished"] == nlora_info["finished"]

    capsys.readouterr()
    assert compare_methods.main(tiny_args(out, "inclora", "olora") + ["--table-only"]) == 0
    printed = capsys.readouterr().out
    assert "[skip] olora-seed0 is empty" in printed and not (out / "olora-seed0").exists()
    table = (out / "comparison.md").read_text()
    assert "| inclora-seed0 | inclora |" in table and "olora-seed0" not in table.split("```")[-1]


def test_official_mode_gets_square_targets_on_a_gqa_model(compare_methods, tmp_path):
    args = compare_methods.argparse.Namespace(
        model=str(REPO / "configs" / "tiny.yaml"), preset="none", data_dir=None, max_train_samples=16,
        max_eval_samples=8, epochs=1, batch_size=8, max_length=256, lr=None, nlora_lambda=0.05, nlora_official_lambda=None,
        forward_transfer=False, fit_arg=["--model.lora.dropout=0.2"])
    command = compare_methods.fit_command(args, "nlora_official", 0, tmp_path / "run", "empty")
    assert command[command.index("--model.lora.target_modules") + 1] == "[q_proj]"
    assert not any(a.startswith("--model.method_defaults") for a in command)  # --nlora-lambda: delta_w form only
    assert "--ckpt_path" not in command and "--data.data_dir" not in command
    assert command[-1] == "--model.lora.dropout=0.2"  # --fit-arg goes to every run, after the script's own


def test_each_lambda_option_sets_its_own_forms_default_only(compare_methods, tmp_path):
    args = compare_methods.argparse.Namespace(
        model="smollm2", preset="standard_order1", data_dir=None, max_train_samples=16, max_eval_samples=8, epochs=1,
        batch_size=8, max_length=256, lr=None, nlora_lambda=3e-4, nlora_official_lambda=0.2, forward_transfer=False,
        fit_arg=[])
    defaults = {method: [(a, json.loads(command[i + 1])) for i, a in enumerate(command) if a.startswith("--model.method_defaults")]
                for method in ("nlora", "nlora_olora", "nlora_official", "olora")
                for command in [compare_methods.fit_command(args, method, 0, tmp_path / method, "empty")]}
    assert defaults["nlora"] == defaults["nlora_olora"] == [("--model.method_defaults.nlora_l1/delta_w", {"weight": 3e-4})]
    assert defaults["nlora_official"] == [("--model.method_defaults.nlora_l1/official", {"weight": 0.2})]
    assert defaults["olora"] == []


def test_an_unknown_method_is_refused_before_any_run(compare_methods, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_methods.main(tiny_args(tmp_path / "cmp", "inclora", "nlroa"))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "no config 'nlroa' in configs/methods/" in error and "nlora_official" in error
    assert not (tmp_path / "cmp").exists()


def test_a_failed_run_makes_the_exit_status_nonzero(compare_methods, tmp_path, capsys):
    bad_data = tmp_path / "empty_benchmark"
    bad_data.mkdir()
    args = tiny_args(tmp_path / "cmp", "inclora") + ["--data-dir", str(bad_data)]
    assert compare_methods.main(args) == 1
    captured = capsys.readouterr()
    assert "[fail] inclora-seed0" in captured.out and "failed: inclora-seed0" in captured.err
    assert "(no finished run)" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_eval_schedule_reaches_the_fit_command(compare_methods, tmp_path):
    import argparse

    args = argparse.Namespace(model=str(REPO / "configs" / "tiny.yaml"), preset="none", data_dir=None, max_train_samples=16,
                              max_eval_samples=8, epochs=1, batch_size=8, max_length=256, lr=None, nlora_lambda=None, nlora_official_lambda=None,
                              fit_arg=[], forward_transfer=False, eval_schedule="diagonal_final")
    command = compare_methods.fit_command(args, "inclora", 0, tmp_path / "run", "new")
    assert command[command.index("--data.eval_schedule") + 1] == "diagonal_final"
    args.eval_schedule = None
    assert "--data.eval_schedule" not in compare_methods.fit_command(args, "inclora", 0, tmp_path / "run", "new")


def fake_fits(compare_methods, monkeypatch, parties: int, exit_codes: dict):
    """Replace the ``nlora fit`` subprocess: each call waits until ``parties`` calls are in flight at once."""
    import subprocess
    import threading

    barrier, calls = threading.Barrier(parties, timeout=10), []

    def run(command, stdout, stderr, env):
        calls.append((command, env))
        barrier.wait()  # raises BrokenBarrierError unless the runs overlap
        name = next(Path(a).name for a in command if Path(a).name.startswith(".") and a.endswith(".yaml"))
        return subprocess.CompletedProcess(command, exit_codes.get(name.split("-seed")[0].lstrip("."), 0))

    monkeypatch.setattr(compare_methods.subprocess, "run", run)
    return calls


def test_jobs_train_runs_side_by_side_with_the_cores_shared_out(compare_methods, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(compare_methods.os, "cpu_count", lambda: 4)
    calls = fake_fits(compare_methods, monkeypatch, parties=2, exit_codes={"seqlora": 3})
    assert compare_methods.main(tiny_args(tmp_path / "cmp", "inclora", "seqlora") + ["--jobs", "2"]) == 1
    assert sorted(env["OMP_NUM_THREADS"] for _, env in calls) == ["2", "2"]
    captured = capsys.readouterr()
    assert "failed: seqlora-seed0" in captured.err and "inclora" not in captured.err

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's own setting is kept
    calls = fake_fits(compare_methods, monkeypatch, parties=2, exit_codes={})
    assert compare_methods.main(tiny_args(tmp_path / "cmp2", "inclora", "seqlora") + ["--jobs", "2"]) == 0
    assert [env["OMP_NUM_THREADS"] for _, env in calls] == ["1", "1"]


def test_one_job_runs_one_at_a_time_and_leaves_threads_alone(compare_methods, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    calls = fake_fits(compare_methods, monkeypatch, parties=1, exit_codes={})
    assert compare_methods.main(tiny_args(tmp_path / "cmp", "inclora", "seqlora")) == 0
    assert len(calls) == 2 and all("OMP_NUM_THREADS" not in env for _, env in calls)
    with pytest.raises(ValueError, match="at least 1"):
        compare_methods.run_jobs(0, [])


def test_jobs_below_one_are_refused_before_any_run(compare_methods, tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_methods.main(tiny_args(tmp_path / "cmp", "inclora") + ["--jobs", "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err and not (tmp_path / "cmp").exists()

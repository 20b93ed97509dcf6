"""The command line as a user runs it: ``nlora fit --config configs/tiny.yaml``."""

import json
import subprocess
import sys

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO, check=True, timeout=300):
    result = subprocess.run([sys.executable, "-m", "nlora_lightning", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"nlora {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def tiny_args(tmp_path, accelerator="cpu", name="tiny"):
    return [
        "--config", "configs/tiny.yaml",
        "--trainer.accelerator", accelerator,
        "--trainer.default_root_dir", str(tmp_path / name),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.logger.init_args.name", name,
    ]


@pytest.mark.slow
def test_fit_tiny_config_writes_matrix_and_metrics(tmp_path, accelerator):
    result = run_cli("fit", *tiny_args(tmp_path, accelerator))
    run = tmp_path / "tiny"
    metrics = json.loads((run / "cl_metrics.json").read_text())
    assert set(metrics) == {"tasks", "acc_matrix", "AA", "BWT", "forgetting", "FWT", "AA_ci95", "BWT_ci95", "bootstrap",
                            "AA_chance", "AA_majority", "never_learned", "baselines", "eval_schedule", "metric", "task_metrics",
                            "scoring", "retention"}
    assert set(metrics["baselines"]["tasks"]) == {"reviews", "topics"} and "trivial baselines: AA of always" in result.stdout
    assert metrics["tasks"] == ["reviews", "topics"]
    assert len(metrics["acc_matrix"]) == 2 and all(len(row) == 2 for row in metrics["acc_matrix"])
    assert all(v is not None for row in metrics["acc_matrix"] for v in row)
    csv = (run / "acc_matrix.csv").read_text().splitlines()
    assert csv[0] == "after,reviews,topics" and len(csv) == 3
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert "AA =" in result.stdout and "BWT =" in result.stdout
    console = result.stdout + result.stderr  # issue 24 item 6: known third-party notices are filtered
    assert "litlogger" not in console and "LeafSpec" not in console and "Loading weights" not in console


def test_print_config_composes_several_files(tmp_path):
    method = tmp_path / "method.yaml"
    method.write_text("model:\n  methods:\n    - name: olora_orthogonality\n      weight: 0.5\n")
    result = run_cli("fit", "--config", "configs/tiny.yaml", "--config", str(method), "--print_config")
    assert "- name: olora_orthogonality" in result.stdout and "- name: nlora_l1" not in result.stdout
    assert "class_path: torch.optim.AdamW" in result.stdout


def test_module_entry_point_and_console_script_agree():
    import tomllib

    from nlora_lightning.cli import run  # the console script's target

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nlora"] == "nlora_lightning.cli:run" and callable(run)
    assert "run()" in (REPO / "nlora_lightning" / "__main__.py").read_text()
    result = run_cli("--help")
    assert "fit" in result.stdout and "validate" in result.stdout


def test_console_entry_prints_input_errors_as_one_line(monkeypatch, capsys):
    from nlora_lightning import cli
    from nlora_lightning.errors import DataError

    def fail(error):
        def main():
            raise error
        return main

    monkeypatch.setattr(cli, "main", fail(DataError("train.json is empty")))
    with pytest.raises(SystemExit) as caught:
        cli.run()
    assert caught.value.code == 1
    assert capsys.readouterr().err == "nlora: error: DataError: train.json is empty\n"

    monkeypatch.setenv("NLORA_TRACEBACK", "1")
    with pytest.raises(DataError):
        cli.run()
    monkeypatch.delenv("NLORA_TRACEBACK")

    monkeypatch.setattr(cli, "main", fail(RuntimeError("a bug")))  # not an input error: full traceback
    with pytest.raises(RuntimeError):
        cli.run()


def test_bad_setting_fails_in_one_line_before_writing(tmp_path):
    result = run_cli("fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--model.lora.r", "0",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
                     check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "LoRA rank r must be a positive integer, got r=0" in result.stderr
    assert not any(tmp_path.iterdir())


PARSE_ERRORS = [
    ("task list as one string", ["--data.tasks", "reviews,topics"], "data.tasks expects list[str] or null, got 'reviews,topics'"),
    ("lambda not a number", ["--model.methods", '[{"name": "nlora_l1", "weight": "abc"}]'],
     "model.methods -> weight expects float or null, got 'abc'"),
    ("fractional sample cap", ["--data.max_eval_samples", "1.5"], "data.max_eval_samples expects int or null, got '1.5'"),
    ("missing config file", ["--config", "{tmp}/nope.yaml"], "--config: file does not exist: '{tmp}/nope.yaml'"),
    ("typo'd key in a config file", ["--config", "{tmp}/typo.yaml"], "unknown option 'modle.lora.r' (did you mean 'model.lora.r'?)"),
]


@pytest.mark.parametrize("case, extra, cause", PARSE_ERRORS, ids=[c[0] for c in PARSE_ERRORS])
def test_parse_errors_are_one_line_with_the_expected_type(tmp_path, monkeypatch, capsys, case, extra, cause):
    from nlora_lightning import cli

    (tmp_path / "typo.yaml").write_text("modle:\n  lora: {r: 2}\n")
    extra = [word.replace("{tmp}", str(tmp_path)) for word in extra]
    monkeypatch.setattr(sys, "argv", ["nlora", "fit", "--config", str(REPO / "configs" / "tiny.yaml"), *extra])
    with pytest.raises(SystemExit) as caught:
        cli.run()
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err == f"nlora: error: CommandLineError: {cause.replace('{tmp}', str(tmp_path))}; see: nlora fit --help\n"


def test_default_root_dir_moves_the_run_directory(tmp_path):
    from nlora_lightning.callbacks.forgetting_metrics import run_dir
    from nlora_lightning.cli import NLoRACLI

    tiny = ["--config", str(REPO / "configs" / "tiny.yaml"), "--trainer.default_root_dir", str(tmp_path / "elsewhere")]
    assert run_dir(NLoRACLI(args=tiny, run=False).trainer) == tmp_path / "elsewhere"
    # logger options given on the command line win
    named = NLoRACLI(args=[*tiny, "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", "x"], run=False)
    assert run_dir(named.trainer) == tmp_path / "x"


def test_top_level_help_lists_every_subcommand_with_one_line():
    """Issue 28 bug 7: `nlora --help` listed Lightning's validate/test/predict but not export, report, compare."""
    result = run_cli("--help")
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["fit", "validate", "test", "predict", "report", "compare", "export"]
    assert all(len(line.split()) > 3 for line in result.stdout.splitlines() if line.startswith("  "))


def small_checkpoint(path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}, "epoch": 0}, path)
    return path


def test_truncated_last_checkpoint_is_named_as_such_without_suggesting_last(tmp_path):
    """Issue 28 bug 5: it said 'not a checkpoint ... give ... or --ckpt_path last' to a user who passed last."""
    from nlora_lightning.cli import unreadable_checkpoint_message

    path = small_checkpoint(tmp_path / "last.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    import torch

    with pytest.raises(Exception) as caught:
        torch.load(path, weights_only=True)
    message = unreadable_checkpoint_message(path, caught.value, given="last")
    assert message.startswith(f"the run's last checkpoint '{path}' is truncated (its end is missing")
    assert "--ckpt_path last" not in message and "delete it" in message
    assert unreadable_checkpoint_message(path, caught.value, given=str(path)).startswith(f"ckpt_path '{path}' is truncated")
    path.write_bytes(b"not a checkpoint at all")
    assert unreadable_checkpoint_message(path, ValueError("x"), given=str(path)) == (
        f"ckpt_path '{path}' is not a checkpoint: torch.load(weights_only=True) cannot read it (ValueError); "
        "give a .ckpt file written by nlora fit, or --ckpt_path last")


def test_folder_given_as_checkpoint_is_named_with_the_file_to_give(tmp_path):
    """Issue 28 bug 5: `--ckpt_path DIR` said 'does not exist' for a folder that exists."""
    from nlora_lightning.cli import resolve_checkpoint
    from nlora_lightning.errors import CheckpointError

    small_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoints"):
        with pytest.raises(CheckpointError, match=rf"ckpt_path '{folder}' is a folder, not a checkpoint file; give the checkpoint "
                                                  rf"file, e.g. --ckpt_path {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}"):
            resolve_checkpoint(str(folder), None, tmp_path)


def test_truncated_last_checkpoint_fails_the_fit_in_one_line(tmp_path, monkeypatch, capsys):
    from nlora_lightning import cli

    run = tmp_path / "run"
    path = small_checkpoint(run / "checkpoints" / "last.ckpt")
    path.write_bytes(path.read_bytes()[:300])
    (run / "run_info.json").write_text(json.dumps({"status": "running"}))
    monkeypatch.setattr(sys, "argv", ["nlora", "fit", *tiny_args(tmp_path, name="run"),
                                      "--ckpt_path", "last"])
    with pytest.raises(SystemExit) as caught:
        cli.run()
    assert caught.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"nlora: error: CheckpointError: the run's last checkpoint '{path}' is truncated")
    assert not (run / ".nlora.lock").exists(), "the lock is released when the command fails"


@pytest.mark.slow
def test_test_validate_and_predict_use_the_checkpoint_and_leave_the_run_alone(tmp_path):
    """Issue 28 bug 7: `nlora test` printed and wrote nothing; `nlora predict` ended in a traceback."""
    run_cli("fit", *tiny_args(tmp_path))
    run = tmp_path / "tiny"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    result = run_cli("test", "--config", "configs/tiny.yaml", "--ckpt_path", checkpoint)
    scores = json.loads((run / "evaluations" / "test-last.json").read_text())
    final_row = json.loads((run / "cl_metrics.json").read_text())["acc_matrix"][-1]
    assert [scores["tasks"][t]["accuracy"] for t in ("reviews", "topics")] == final_row  # the run's own last evaluation
    for task in ("reviews", "topics"):
        entry = scores["tasks"][task]
        assert f"  {task}: {100 * entry['accuracy']:6.2f} % ({entry['correct']}/{entry['total']})" in result.stdout
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "evaluations" not in p.parts} == before

    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"task": "reviews", "sentence": "A fine film.", "label": "positive"}\n{"sentence": "Goal!"}\n')
    result = run_cli("predict", "--config", "configs/tiny.yaml", "--ckpt_path", checkpoint, "--input", str(inputs),
                     "--task", "topics")
    lines = [json.loads(line) for line in (tmp_path / "inputs.predictions.jsonl").read_text().splitlines()]
    assert [(l["task"], l["sentence"], l["label"]) for l in lines] == [("reviews", "A fine film.", "positive"), ("topics", "Goal!", None)]
    assert all(isinstance(l["prediction"], str) and l["prediction"] for l in lines)

    refused = run_cli("test", "--config", "configs/tiny.yaml", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "nlora: error: ConfigurationError: nlora test needs --ckpt_path FILE: a checkpoint written by nlora fit "
        "(e.g. RUN/checkpoints/last.ckpt)")
    refused = run_cli("predict", "--config", "configs/tiny.yaml", "--ckpt_path", checkpoint, check=False)
    assert refused.returncode == 1 and "needs --input FILE.jsonl, or --task NAME" in refused.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "evaluations" not in p.parts} == before

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
    assert set(metrics) == {"tasks", "acc_matrix", "AA", "BWT", "forgetting", "FWT", "AA_ci95", "BWT_ci95", "bootstrap", "eval_schedule",
                            "metric", "task_metrics", "scoring", "retention"}
    assert metrics["tasks"] == ["reviews", "topics"]
    assert len(metrics["acc_matrix"]) == 2 and all(len(row) == 2 for row in metrics["acc_matrix"])
    assert all(v is not None for row in metrics["acc_matrix"] for v in row)
    csv = (run / "acc_matrix.csv").read_text().splitlines()
    assert csv[0] == "after,reviews,topics" and len(csv) == 3
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert "AA =" in result.stdout and "BWT =" in result.stdout


def test_print_config_composes_several_files(tmp_path):
    method = tmp_path / "method.yaml"
    method.write_text("model:\n  regularizers:\n    - name: olora_orthogonality\n      weight: 0.5\n")
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
    ("lambda not a number", ["--model.regularizers", '[{"name": "nlora_l1", "weight": "abc"}]'],
     "model.regularizers -> weight expects float or null, got 'abc'"),
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

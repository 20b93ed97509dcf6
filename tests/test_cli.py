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
    assert set(metrics) == {"tasks", "acc_matrix", "AA", "BWT", "forgetting", "FWT"}
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
    from nlora_lightning.cli import main  # the console script's target

    assert callable(main)
    result = run_cli("--help")
    assert "fit" in result.stdout and "validate" in result.stdout

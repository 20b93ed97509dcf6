"""Issue 28 bug 1: a fit stopped by SIGTERM or SIGINT exits 143 / 130 with one line, marked interrupted.

The SIGTERM case also checks the checkpoint written at the stop (between two steps of an epoch,
with no step-based save to fall back on) and that resuming it gives the uninterrupted run's matrix,
adapters and metrics.csv.
"""

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nlora_lightning.stop_signals import exit_status, resume_command, stop_message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_resume import BATCHES, EPOCHS, assert_same, final_state, metric_rows, reference, reference_dir, run, write_config  # noqa: E402,F401


def test_resume_command_keeps_the_words_and_asks_for_last():
    words = ["fit", "--config", "a b.yaml", "--overwrite", "--ckpt_path", "x.ckpt", "--data.tasks", "[r]"]
    assert resume_command(words) == "nlora fit --config 'a b.yaml' --data.tasks '[r]' --ckpt_path last"
    assert resume_command(["fit", "--ckpt_path=last"]) == "nlora fit --ckpt_path last"


def test_stop_message_names_the_signal_checkpoint_and_resume_command(tmp_path):
    line = stop_message(signal.SIGTERM, tmp_path / "last.ckpt", ["fit", "--config", "c.yaml"])
    assert line == f"nlora: stopped by SIGTERM; checkpoint: {tmp_path / 'last.ckpt'}; resume with: nlora fit --config c.yaml --ckpt_path last"
    assert "before any checkpoint was saved" in stop_message(signal.SIGINT, None, ["fit"])
    assert (exit_status(signal.SIGTERM), exit_status(signal.SIGINT)) == (143, 130)


def with_signal(path: Path, step: int, signum: int) -> Path:
    config = yaml.safe_load(path.read_text())
    config["trainer"]["callbacks"].append({"class_path": "signal_at_step.SignalAtStep", "init_args": {"step": step, "signum": int(signum)}})
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_sigterm_mid_epoch_exits_143_saves_at_the_stop_and_resumes_identically(tmp_path, reference_dir, reference):
    no_step_saves = {}  # last.ckpt only at epoch ends: a mid-epoch checkpoint can only come from the stop
    stop_step = EPOCHS * BATCHES + 1  # task 1, first epoch, after its second batch
    stopped = run(with_signal(write_config(tmp_path, "stopped", checkpoint=no_step_saves), stop_step - 1, signal.SIGTERM), check=False)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    checkpoint = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    line = [l for l in stopped.stderr.splitlines() if l.startswith("nlora: stopped")]
    assert line == [f"nlora: stopped by SIGTERM; checkpoint: {checkpoint.resolve()}; resume with: nlora fit --config "
                    f"{tmp_path / 'stopped.yaml'} --ckpt_path last"]
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == stop_step, "saved at the stop"
    info = json.loads((tmp_path / "stopped" / "run_info.json").read_text())
    assert info["status"] == "interrupted" and info["error"] == "stopped by SIGTERM"

    run(write_config(tmp_path, "stopped", checkpoint=no_step_saves), "--ckpt_path", "last")
    resumed = final_state(tmp_path / "stopped")
    assert resumed[0] == reference[0]
    assert_same(resumed[1], reference[1])
    assert metric_rows(tmp_path / "stopped") == metric_rows(reference_dir)


@pytest.mark.slow
def test_sigint_exits_130_and_marks_the_run_interrupted(tmp_path):
    config = with_signal(write_config(tmp_path, "ctrl_c"), 1, signal.SIGINT)
    stopped = run(config, "--data.tasks", "[reviews]", check=False)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "nlora: stopped by SIGINT" in stopped.stderr and "Traceback" not in stopped.stderr
    info = json.loads((tmp_path / "ctrl_c" / "run_info.json").read_text())
    assert info["status"] == "interrupted"

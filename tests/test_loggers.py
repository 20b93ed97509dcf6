"""ContinualCSVLogger: metrics.csv keeps every step once across a kill and resume."""

import csv

from nlora_lightning.loggers import ContinualCSVLogger


def rows(path):
    with open(path, newline="") as file:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def test_rows_survive_a_resume_once_each(tmp_path):
    killed = ContinualCSVLogger(tmp_path, name="run", version="")
    for step in range(6):  # a kill after step 5 was logged; the checkpoint covered steps 0..3
        killed.log_metrics({"train/loss": float(step)}, step=step)
    killed.log_metrics({"cl/AA": 0.5}, step=3)  # an evaluation row logged at the checkpoint's step
    # no finalize: the process was killed, yet every logged row is on disk
    assert [r["step"] for r in rows(tmp_path / "run" / "metrics.csv")] == ["0", "1", "2", "3", "4", "5", "3"]

    resumed = ContinualCSVLogger(tmp_path, name="run", version="")
    for step in range(4, 8):
        resumed.log_metrics({"train/loss": float(step), "train/task_loss": 1.0}, step=step)
    resumed.finalize("success")
    result = rows(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in result] == ["0", "1", "2", "3", "3", "4", "5", "6", "7"]
    assert result[4] == {"cl/AA": "0.5", "step": "3"}
    assert result[-1] == {"train/loss": "7.0", "train/task_loss": "1.0", "step": "7"}


def test_a_fresh_run_starts_a_fresh_file(tmp_path):
    logger = ContinualCSVLogger(tmp_path, name="run", version="")
    logger.log_metrics({"a": 1.0}, step=0)
    assert rows(tmp_path / "run" / "metrics.csv") == [{"a": "1.0", "step": "0"}]


# configs/loggers/: TensorBoard and W&B composed after a model config, beside its CSV logger.

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
LOGGER_CLASSES = {
    "tensorboard.yaml": "lightning.pytorch.loggers.TensorBoardLogger",
    "wandb.yaml": "lightning.pytorch.loggers.WandbLogger",
}
MODEL_CONFIGS = ["tiny.yaml", "demo.yaml", *(f"models/{p.name}" for p in sorted((CONFIGS / "models").glob("*.yaml")))]


def printed_config(*args):
    from nlora_lightning.cli import NLoRACLI

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        NLoRACLI(args=["fit", *args, "--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("logger_config", sorted(LOGGER_CLASSES))
@pytest.mark.parametrize("model_config", MODEL_CONFIGS)
def test_logger_config_composes_beside_the_csv_logger(model_config, logger_config):
    written = yaml.safe_load((CONFIGS / model_config).read_text())["trainer"]["logger"]
    loggers = printed_config("--config", str(CONFIGS / model_config), "--config", str(CONFIGS / "loggers" / logger_config))["trainer"]["logger"]
    assert isinstance(loggers, list) and len(loggers) == 2
    # the model config's CSV logger, first and unchanged: it decides the run directory
    assert loggers[0]["class_path"] == written["class_path"] == "nlora_lightning.loggers.ContinualCSVLogger"
    assert {k: loggers[0]["init_args"][k] for k in written["init_args"]} == written["init_args"]
    assert loggers[1]["class_path"] == LOGGER_CLASSES[logger_config]


def test_default_root_dir_moves_the_first_logger_of_a_list(tmp_path):
    from nlora_lightning.callbacks.forgetting_metrics import run_dir
    from nlora_lightning.cli import NLoRACLI

    pytest.importorskip("tensorboard")
    args = ["--config", str(CONFIGS / "tiny.yaml"), "--config", str(CONFIGS / "loggers" / "tensorboard.yaml"),
            "--trainer.default_root_dir", str(tmp_path / "elsewhere")]
    assert run_dir(NLoRACLI(args=args, run=False).trainer) == tmp_path / "elsewhere"


@pytest.mark.slow
def test_tiny_fit_logs_to_tensorboard_and_keeps_its_run_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = [sys.executable, "-m", "nlora_lightning", "fit", "--config", str(CONFIGS / "tiny.yaml"),
               "--config", str(CONFIGS / "loggers" / "tensorboard.yaml"), "--data.max_train_samples", "16", "--data.max_eval_samples", "8"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # relative paths land in tmp_path
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    assert (run / "cl_metrics.json").is_file() and "train/loss" in (run / "metrics.csv").read_text()
    (events,) = (tmp_path / "runs" / "tensorboard").glob("version_*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"train/loss", "train/task_loss", "cl/AA", "cl/BWT"} <= set(accumulator.Tags()["scalars"])

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

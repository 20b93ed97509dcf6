"""Every method config gives the numbers main gave before the ``Method`` redesign (issue 24).

``tests/fixtures/method_numbers.json`` was written once from main at acd3a0b (before any change):
for each ``configs/methods/*.yaml`` composed with ``configs/tiny.yaml`` and cut to two optimizer
steps per task, every logged training value per step (the task loss, each loss term, the gradient
transforms' statistics; a term that is zero at task 0 is non-zero after the boundary) and the
accuracy matrix. Never regenerate it: a difference means the redesign changed a method.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from nlora_lightning.cli import NLoRACLI

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests/fixtures/method_numbers.json"
PINNED = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
METHODS = sorted(p.stem for p in (REPO / "configs/methods").glob("*.yaml"))
# Two optimizer steps per task, four evaluation samples per task.
CUT = ["--data.max_train_samples", "4", "--data.batch_size", "2", "--data.max_eval_samples", "2", "--data.eval_batch_size", "2"]
# No zero-shot pass and no bootstrap: the accuracy matrix is the same, the run shorter.
QUIET_METRICS = ("[{class_path: nlora_lightning.callbacks.ForgettingMetrics, "
                 "init_args: {forward_transfer: false, bootstrap_resamples: 0}}]")
EXTRA = {"nlora_official": ["--model.lora.target_modules", "[q_proj]"]}  # official needs square layers


def run_numbers(tmp_path: Path, method: str) -> dict:
    """``{"steps": {column: [value per step]}, "acc_matrix": [[...]]}`` of a tiny run of ``method``."""
    args = [
        "fit", "--config", str(REPO / "configs/tiny.yaml"), "--config", str(REPO / f"configs/methods/{method}.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path / method),
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", method,
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", QUIET_METRICS, *CUT, *EXTRA.get(method, []),
    ]
    NLoRACLI(args=args)
    run = tmp_path / method
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = sorted({c for row in rows for c in row if c.startswith("train/") and c != "train/loss_epoch"})
    steps = {c: [float(row[c]) for row in rows if row.get(c)] for c in columns}
    return {"steps": steps, "acc_matrix": json.loads((run / "cl_metrics.json").read_text())["acc_matrix"]}


def test_every_method_config_is_pinned():
    assert sorted(PINNED) == METHODS and len(METHODS) == 16


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_method_gives_the_pinned_numbers(tmp_path, method):
    got, want = run_numbers(tmp_path, method), PINNED[method]
    assert got["acc_matrix"] == want["acc_matrix"]
    assert sorted(got["steps"]) == sorted(want["steps"])
    for column, values in want["steps"].items():
        assert len(got["steps"][column]) == len(values), column
        for step, (a, b) in enumerate(zip(got["steps"][column], values)):
            assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7), f"{method} {column} step {step}: {a} != {b}"


if __name__ == "__main__":  # how the fixture was written (on main at acd3a0b, before the redesign)
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        numbers = {m: run_numbers(Path(folder), m) for m in METHODS}
    Path(sys.argv[1]).write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")

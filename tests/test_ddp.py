"""DDP on CPU (gloo): two processes give the single-process accuracy matrix; counts are summed over ranks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nlora_lightning.reporting.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]


def fit(tmp_path: Path, name: str, *extra: str) -> dict:
    args = [
        sys.executable, "-m", "nlora_lightning", "fit", "--config", str(REPO / "configs/tiny.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path / name),
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", name,
        "--data.max_eval_samples", "16", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    run = tmp_path / name
    return {"metrics": json.loads((run / "cl_metrics.json").read_text()),
            "details": json.loads((run / "cl_details.json").read_text()), "stdout": result.stdout}


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    single = fit(tmp_path, "single", "--data.batch_size", "8")
    # Same effective batch: 2 ranks x 4; each rank's shard interleaves the single run's batch.
    ddp = fit(tmp_path, "ddp", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "4")
    a, b = single["metrics"]["acc_matrix"], ddp["metrics"]["acc_matrix"]
    assert len(a) == len(b) == 2
    for row_a, row_b in zip(a, b):
        for x, y in zip(row_a, row_b):
            assert abs(x - y) <= 1 / 16 + 1e-9, (a, b)  # at most one of 16 test samples differs
    # every test sample was counted once, over both ranks together
    assert ddp["details"]["evaluated_samples"] == single["details"]["evaluated_samples"]
    assert ddp["details"]["evaluated_samples"][-1] == [16, 16]
    # only rank 0 printed the summary
    assert ddp["stdout"].count("AA =") == 1
    # per-sample predictions gathered from both ranks into the run's one file, every sample once per evaluation
    for stage, task in ((1, 0), (1, 1), (None, 0)):
        ids = lambda run: [r["sample_id"] for r in read_predictions(tmp_path / run) if (r["stage"], r["task"]) == (stage, single["metrics"]["tasks"][task])]  # noqa: E731
        assert ids("ddp") == ids("single") and len(ids("ddp")) == len(set(ids("ddp"))) == 16

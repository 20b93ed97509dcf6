"""A checkpoint written by main before the ``Method`` redesign still resumes and exports (issue 24 item 2).

``tests/fixtures/ewc_lora_mid_task1.ckpt`` was written on main at acd3a0b by the config next to it
(tiny + ``ewc_lora`` in the old ``model.regularizers`` syntax), killed half-way through task 1 of 2:
it holds task 0's adapter, the live slot and EWC-LoRA's importance from task 0. The numbers below
are what that main produced when resuming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nlora_lightning.cli import NLoRACLI
from nlora_lightning.errors import UnfinishedRunError
from nlora_lightning.export import export_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFIG, CHECKPOINT = FIXTURES / "ewc_lora_mid_task1.yaml", FIXTURES / "ewc_lora_mid_task1.ckpt"


def test_the_old_checkpoint_resumes_to_mains_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    NLoRACLI(args=["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(out), "--ckpt_path", str(CHECKPOINT)])
    assert json.loads((out / "cl_metrics.json").read_text())["acc_matrix"] == [[0.5, 0.375], [0.5, 0.375]]
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    snapshots = checkpoint["nlora"]["adapters"]["snapshots"]
    b_sums = {t: float(sum(v.abs().sum() for v in s["B"].values())) for t, s in snapshots.items()}
    assert b_sums == {0: torch.tensor(4.298266410827637).item(), 1: torch.tensor(2.752671480178833).item()}

    exported = export_run(out, tmp_path / "export")
    info = json.loads((exported / "export_info.json").read_text())
    assert [t["index"] for t in info["tasks"]] == [0, 1] and info["method"] == "ewc_lora"


def test_the_old_checkpoint_exports_its_finished_task_and_live_slot(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(CHECKPOINT, run / "checkpoints" / "last.ckpt")
    with pytest.raises(UnfinishedRunError, match="task 1 .* saved half-trained"):  # stopped mid-sequence
        export_run(run, tmp_path / "export")
    exported = export_run(run, tmp_path / "export", allow_unfinished=True)
    info = json.loads((exported / "export_info.json").read_text())
    assert [(t["index"], t["from"]) for t in info["tasks"]] == [(0, "snapshot"), (1, "trainable slot")]
    assert info["lora"]["r"] == 4 and (exported / info["tasks"][1]["folder"] / "adapter_model.safetensors").is_file()

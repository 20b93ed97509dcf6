"""Every method config runs on configs/tiny.yaml; each has the trainable set and loss terms it promises."""

import csv
import json
from pathlib import Path

import pytest
import torch

from nlora_lightning.cli import NLoRACLI

REPO = Path(__file__).resolve().parents[1]


def fit(tmp_path, method, *extra, accelerator="cpu"):
    name = method.replace("+", "_")
    args = [
        "fit", "--config", str(REPO / "configs/tiny.yaml"), "--config", str(REPO / f"configs/methods/{method}.yaml"),
        "--trainer.accelerator", accelerator, "--trainer.default_root_dir", str(tmp_path / name),
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", name,
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", *extra,
    ]
    cli = NLoRACLI(args=args)
    run = tmp_path / name
    with open(run / "metrics.csv") as handle:
        columns = next(csv.reader(handle))
    return cli, json.loads((run / "cl_metrics.json").read_text()), columns


def reg_columns(columns):
    return sorted(c.split("/")[-1] for c in columns if c.startswith("train/reg/"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, extra, regs",
    [
        ("nlora", [], ["nlora_l1"]),
        ("nlora_official", ["--model.lora.target_modules", "[q_proj]"], ["nlora_l1"]),
        ("olora", [], ["olora_orthogonality"]),  # lambda_2 = 0: not computed
        ("nlora_olora", [], ["nlora_l1", "olora_orthogonality"]),
        ("inclora", [], []),
        ("replay", [], []),
    ],
)
def test_per_task_methods(tmp_path, accelerator, method, extra, regs):
    cli, metrics, columns = fit(tmp_path, method, *extra, accelerator=accelerator)
    module = cli.model
    assert module.method_name == method.replace("_olora", "+olora")
    assert sorted(module.adapters.snapshots) == [0, 1] and module.adapter_mode == "per_task"
    assert reg_columns(columns) == regs
    assert len(metrics["acc_matrix"]) == 2 and metrics["BWT"] is not None
    # after the last task every adapter is frozen; each listed term was computed and non-zero by task 1
    assert not any(p.requires_grad for p in module.model.parameters())
    for name in regs:
        assert any(v > 0.0 for v in metric_values(tmp_path / method.replace("+", "_"), f"train/reg/{name}")), name


@pytest.mark.slow
def test_replay_mixes_earlier_samples(tmp_path, accelerator):
    cli, _, _ = fit(tmp_path, "replay", accelerator=accelerator)
    stage1 = cli.datamodule.stage_train_examples(1)
    assert {e["task"] for e in stage1} == {0, 1}


@pytest.mark.slow
def test_seqlora_trains_one_shared_adapter(tmp_path, accelerator):
    cli, metrics, columns = fit(tmp_path, "seqlora", accelerator=accelerator)
    module = cli.model
    assert module.adapter_mode == "shared" and reg_columns(columns) == []
    first = module.adapters.snapshots[0]
    # the shared slot kept training: the snapshot after task 1 differs from the one after task 0
    assert any(not torch.equal(first.B[n], module.adapters.snapshots[1].B[n]) for n in first.B)
    assert all(layer.frozen_rank == 0 for layer in module.adapters.layers.values())


@pytest.mark.slow
def test_seqft_trains_every_weight(tmp_path, accelerator):
    cli, metrics, _ = fit(tmp_path, "seqft", accelerator=accelerator)
    module = cli.model
    assert module.adapters is None
    assert all(p.requires_grad for p in module.model.parameters())
    assert len(metrics["acc_matrix"]) == 2


@pytest.mark.slow
def test_mtl_has_one_stage_and_one_row(tmp_path, accelerator):
    cli, metrics, _ = fit(tmp_path, "mtl", accelerator=accelerator)
    assert cli.datamodule.stages == [[0, 1]]
    assert len(metrics["acc_matrix"]) == 1 and len(metrics["acc_matrix"][0]) == 2
    assert metrics["AA"] is not None and metrics["BWT"] is None and metrics["forgetting"] is None


@pytest.mark.slow
def test_pertask_oracle_keeps_each_task_score(tmp_path, accelerator):
    cli, metrics, _ = fit(tmp_path, "pertask", accelerator=accelerator)
    R = metrics["acc_matrix"]
    # task 0 is always evaluated with its own adapter only, so training task 1 cannot change its score
    assert R[1][0] == R[0][0]
    assert metrics["BWT"] == 0.0


# ----- later methods: ELLA, EWC-LoRA, EWC, LwF -------------------------------------------------------
def metric_values(run_dir, column):
    with open(run_dir / "metrics.csv") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]


@pytest.mark.slow
@pytest.mark.parametrize("method, adapters", [("ella", "per_task"), ("ewc_lora", "per_task"), ("ewc", "shared"), ("lwf", "per_task")])
def test_later_methods_run_with_their_terms(tmp_path, accelerator, method, adapters):
    cli, metrics, columns = fit(tmp_path, method, accelerator=accelerator)
    module = cli.model
    assert module.method_name == method and module.adapter_mode == adapters
    assert reg_columns(columns) == [method]
    assert len(metrics["acc_matrix"]) == 2 and metrics["BWT"] is not None
    values = metric_values(tmp_path / method, f"train/reg/{method}")
    steps_per_task = len(values) // 2
    # nothing to protect during the first task; a non-zero term during the second
    assert all(v == 0.0 for v in values[:steps_per_task]) and any(v > 0.0 for v in values[steps_per_task:])
    expected = module.adapters.slot_parameter_names(module.model) if adapters == "shared" else set()
    assert {n for n, p in module.model.named_parameters() if p.requires_grad} == expected  # after the last task
    if method in ("ewc_lora", "ewc"):
        term = module.method_objects[0]
        assert term.tasks == [0, 1] and all(torch.isfinite(v).all() and v.sum() > 0 for v in term.importance.values())

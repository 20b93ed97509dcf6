"""Evaluation schedules, the predictions file, bootstrap intervals, resuming and trivial baselines on the tiny model."""

import json
import random
import shutil
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from nlora_lightning import ContinualLightningModule, LoRAConfig, MethodConfig, TaskSequenceDataModule
from nlora_lightning.callbacks import ForgettingMetrics
from nlora_lightning.data.benchmark import load_task
from nlora_lightning.data.sampling import stratified_subsample
from nlora_lightning.data.toy import TOY_BENCHMARK_DIR
from nlora_lightning.metrics.bootstrap import bootstrap_cl_intervals
from nlora_lightning.reporting.predictions import read_predictions, scores_by_id, write_predictions
from nlora_lightning.reporting.report import write_report

TASKS = ["reviews", "topics", "intents"]  # three tasks: with two, both schedules evaluate the same entries


def fit(tiny, init, make_trainer, tmp_path, schedule):
    module = tiny.module(init, methods=[MethodConfig("nlora_l1", weight=0.01)])
    trainer = make_trainer(name=schedule, callbacks=[ForgettingMetrics(forward_transfer=True, bootstrap_resamples=200)])
    trainer.fit(module, datamodule=tiny.data(tasks=TASKS, eval_schedule=schedule))
    run = tmp_path / schedule
    return run, json.loads((run / "cl_metrics.json").read_text())


@pytest.mark.slow
def test_diagonal_final_evaluates_2t_entries_equal_to_the_full_schedule(tiny, tiny_llama_init, make_trainer, tmp_path, capsys):
    full_run, full = fit(tiny, tiny_llama_init, make_trainer, tmp_path, "full")
    diag_run, diag = fit(tiny, tiny_llama_init, make_trainer, tmp_path, "diagonal_final")

    evaluated = {(i, j) for i, row in enumerate(diag["acc_matrix"]) for j, v in enumerate(row) if v is not None}
    # own task at each stage end, the next task (forward transfer), every task after the last stage
    assert evaluated == {(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)}
    assert full["acc_matrix"][1][0] is not None and diag["acc_matrix"][1][0] is None
    for i, j in evaluated:  # deterministic runs: the same model state gives the same accuracy
        assert diag["acc_matrix"][i][j] == full["acc_matrix"][i][j]
    for key in ("AA", "BWT", "FWT", "AA_ci95", "BWT_ci95"):
        assert diag[key] == full[key] and diag[key] is not None, key
    assert full["forgetting"] is not None and diag["forgetting"] is None
    assert (diag["eval_schedule"], full["eval_schedule"]) == ("diagonal_final", "full")
    assert diag["acc_matrix"][1][0] is None and "reviews" in (diag_run / "acc_matrix.csv").read_text()
    assert (diag_run / "acc_matrix.csv").read_text().splitlines()[2].startswith("topics,,")  # blank, not 0
    assert "forgetting = n/a" in capsys.readouterr().out

    # one predictions file: a line per sample of every task evaluation (zero-shot included), consistent with the matrix
    assert not (diag_run / "predictions").exists()
    lines, full_lines = read_predictions(diag_run), read_predictions(full_run)
    assert {(r["stage"], TASKS.index(r["task"])) for r in lines} == evaluated | {(None, 0), (None, 1), (None, 2)}
    assert len(lines) == 8 * (3 + len(evaluated))
    for i, j in evaluated:
        records = [r for r in lines if (r["stage"], r["task"]) == (i, TASKS[j])]
        assert [r["sample_id"] for r in records] == sorted(r["sample_id"] for r in records) and len(records) == 8
        assert sum(r["score"] for r in records) / len(records) == diag["acc_matrix"][i][j]
        labels = load_task(TOY_BENCHMARK_DIR, TASKS[j]).labels
        assert all(r["prediction"] in labels and r["label"] in labels for r in records)  # rank mode: a label
        assert all(r["score"] == float(r["prediction"] == r["label"]) for r in records)
        assert [r for r in full_lines if (r["stage"], r["task"]) == (i, TASKS[j])] == records
    assert set(scores_by_id(lines, None, TASKS[0])) == set(scores_by_id(lines, 0, TASKS[0]))

    lo, hi = diag["AA_ci95"]
    assert lo <= diag["AA"] <= hi and diag["bootstrap"]["resamples"] == 200
    # the intervals are the bootstrap of the predictions files: last row for AA, paired with the diagonal for BWT
    column = lambda i, j: torch.tensor([r["score"] for r in lines if (r["stage"], r["task"]) == (i, TASKS[j])], dtype=torch.float64)  # noqa: E731
    expected = bootstrap_cl_intervals([column(2, j) for j in range(3)], [column(j, j) for j in range(2)], 200, 0)
    assert (tuple(diag["AA_ci95"]), tuple(diag["BWT_ci95"])) == (expected["AA"], expected["BWT"])


# ----- a run with a task made unlearnable: resuming and trivial baselines ---------------------------
UNLEARNABLE = "topics"


def random_label_data(root: Path) -> Path:
    """The toy benchmark with the training labels of ``topics`` drawn at random (seeded): nothing to learn there."""
    data_dir = root / "data"
    shutil.copytree(TOY_BENCHMARK_DIR, data_dir)
    train = data_dir / "TOPIC" / UNLEARNABLE / "train.json"
    labels = json.loads((train.parent / "labels.json").read_text())
    records, rng = json.loads(train.read_text()), random.Random(0)
    for record in records:
        record["label"] = rng.choice(labels)
    train.write_text(json.dumps(records))
    return data_dir


class StagesOnFileAtTrainStart(pl.Callback):
    """Records which stages ``predictions.jsonl`` holds when training (re)starts, after ``on_fit_start``."""

    def __init__(self, run: Path) -> None:
        self.run, self.stages = run, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.stages = {r["stage"] for r in read_predictions(self.run)}


def fit_random_label_run(root: Path, name: str, data_dir: Path, ckpt_path=None, checkpoints: Optional[Path] = None, extra=()):
    callbacks = [ForgettingMetrics(forward_transfer=True, bootstrap_resamples=200), *extra]
    if checkpoints is not None:  # a save inside stage 1 (steps 3-4): stage 0 is evaluated, stage 1 is not
        callbacks.append(ModelCheckpoint(dirpath=checkpoints, filename="{step}", every_n_train_steps=3, save_top_k=-1))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=CSVLogger(str(root), name=name, version=""), callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=checkpoints is not None,
                         max_epochs=-1, deterministic=True)
    # the tiny model of tests/conftest.py, built here because a module-scoped fixture cannot use the function-scoped one
    init = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 1024}
    module = ContinualLightningModule(random_init=init, tokenizer="byte", lora=LoRAConfig(r=2, alpha=8, dropout=0.0),
                                      evaluation={"mode": "rank"}, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2),
                                      methods=[MethodConfig("nlora_l1", weight=0.01)])
    data = TaskSequenceDataModule(tasks=TASKS, data_dir=str(data_dir), max_train_samples=16, max_eval_samples=16, batch_size=8,
                                  eval_batch_size=8, max_source_length=256, max_target_length=12)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return root / name


@pytest.fixture(scope="module")
def random_label_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("random_labels")
    data_dir = random_label_data(root)
    # a fresh fit over a directory holding an earlier run's predictions starts the file anew
    write_predictions(root / "reference", [{"stage": 5, "task": "gone", "sample_id": 0, "prediction": "", "label": "", "score": 1.0}])
    return root, data_dir, fit_random_label_run(root, "reference", data_dir, checkpoints=root / "checkpoints")


@pytest.mark.slow
def test_resumed_run_keeps_exactly_the_lines_of_its_finished_stages(random_label_run):
    root, data_dir, reference = random_label_run
    # The run was "killed" after its last stage wrote predictions; the checkpoint to resume is inside stage 1.
    resumed = root / "resumed"
    shutil.copytree(reference, resumed)
    lines = read_predictions(resumed)
    for line in lines:
        if line["stage"] in (None, 0):
            line["prediction"] = "written before the save"  # finished before the checkpoint: must be kept as they are
    stale = {**lines[-1], "stage": 1, "sample_id": 999}  # an evaluation after the checkpoint: must go
    write_predictions(resumed, lines + [stale])
    on_file = StagesOnFileAtTrainStart(resumed)
    fit_random_label_run(root, "resumed", data_dir, ckpt_path=root / "checkpoints" / "step=3.ckpt", extra=[on_file])
    assert on_file.stages == {None, 0}  # right after the restore: only what the checkpoint had finished

    expected = [({**r, "prediction": "written before the save"} if r["stage"] in (None, 0) else r) for r in read_predictions(reference)]
    assert read_predictions(resumed) == expected  # kept lines untouched, later stages written again once, in order
    assert {r["stage"] for r in read_predictions(reference)} == {None, 0, 1, 2}  # the earlier run's stage 5 went
    assert json.loads((resumed / "cl_metrics.json").read_text())["acc_matrix"] == json.loads(
        (reference / "cl_metrics.json").read_text())["acc_matrix"]


@pytest.mark.slow
def test_baselines_and_the_never_learned_flag_of_a_random_label_task(random_label_run):
    root, data_dir, run = random_label_run
    metrics = json.loads((run / "cl_metrics.json").read_text())
    lines = read_predictions(run)
    for j, task in enumerate(TASKS):
        entry = metrics["baselines"]["tasks"][task]
        data = load_task(data_dir, task)
        # independent of the callback: the training subsample's labels and the test samples' gold labels
        train = [data.records["train"][i]["label"] for i in stratified_subsample([r["label"] for r in data.records["train"]], 16, 7919 * j)]
        answer = max(sorted(set(train)), key=train.count)
        test_labels = [data.records["test"][r["sample_id"]]["label"] for r in lines if (r["stage"], r["task"]) == (j, task)]
        assert entry["majority_answer"] == answer and entry["chance"] == 1 / len(data.labels)
        assert entry["majority"] == sum(label == answer for label in test_labels) / len(test_labels) and len(test_labels) == 16
        assert entry["own"] == metrics["acc_matrix"][j][j]  # right after the task's own training
        assert entry["never_learned"] == (entry["own_ci95"][0] <= entry["majority"])
    assert metrics["baselines"]["tasks"][UNLEARNABLE]["never_learned"]
    assert UNLEARNABLE in metrics["never_learned"]
    assert metrics["never_learned"] == [t for t in TASKS if metrics["baselines"]["tasks"][t]["never_learned"]]
    tasks = metrics["baselines"]["tasks"].values()
    assert metrics["AA_majority"] == pytest.approx(sum(e["majority"] for e in tasks) / 3)
    assert metrics["AA_chance"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)

    report = write_report(run).read_text()
    count = len(metrics["never_learned"])
    assert f"**Never learned: {count} of 3 tasks**" in report
    assert f"| {UNLEARNABLE} |" in report and "never learned" in report


@pytest.mark.parametrize("metric,title", [("rougeL", "ROUGE-L matrix"), ("exact_match", "Accuracy matrix"), ("mixed", "Score matrix")])
def test_the_printed_matrix_is_named_after_its_metric(capsys, metric, title):
    from nlora_lightning.callbacks.forgetting_metrics import print_summary

    print_summary({"tasks": ["a", "b"], "acc_matrix": [[0.5, None], [0.25, 0.75]], "metric": metric, "AA": 0.5}, ["a", "b"])
    printed = capsys.readouterr().out
    assert title in printed and all(t not in printed for t in {"ROUGE-L matrix", "Accuracy matrix", "Score matrix"} - {title})

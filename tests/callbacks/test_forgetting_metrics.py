"""Evaluation schedules, per-sample predictions files and bootstrap intervals on the tiny model."""

import json

import pytest
import torch

from nlora_lightning import MethodConfig
from nlora_lightning.callbacks import ForgettingMetrics
from nlora_lightning.data.benchmark import load_task
from nlora_lightning.data.toy import TOY_BENCHMARK_DIR
from nlora_lightning.metrics.bootstrap import bootstrap_cl_intervals
from nlora_lightning.reporting.predictions import predictions_path, read_predictions

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

    # one predictions file per task evaluation (zero-shot included), consistent with the matrix
    files = sorted(p.name for p in (diag_run / "predictions").iterdir())
    assert len(files) == 3 + len(evaluated)
    for i, j in evaluated:
        records = read_predictions(predictions_path(diag_run, i, j))
        assert [r["sample_id"] for r in records] == sorted(r["sample_id"] for r in records) and len(records) == 8
        assert sum(r["correct"] for r in records) / len(records) == diag["acc_matrix"][i][j]
        labels = load_task(TOY_BENCHMARK_DIR, TASKS[j]).labels
        assert all(r["prediction"] in labels and r["label"] in labels for r in records)  # rank mode: a label
        assert all(r["correct"] == (r["prediction"] == r["label"]) for r in records)
        assert read_predictions(predictions_path(full_run, i, j)) == records
    zero_shot = read_predictions(predictions_path(diag_run, None, 0))
    assert [r["sample_id"] for r in zero_shot] == [r["sample_id"] for r in read_predictions(predictions_path(diag_run, 0, 0))]

    lo, hi = diag["AA_ci95"]
    assert lo <= diag["AA"] <= hi and diag["bootstrap"]["resamples"] == 200
    # the intervals are the bootstrap of the predictions files: last row for AA, paired with the diagonal for BWT
    column = lambda i, j: torch.tensor([r["correct"] for r in read_predictions(predictions_path(diag_run, i, j))], dtype=torch.float64)  # noqa: E731
    expected = bootstrap_cl_intervals([column(2, j) for j in range(3)], [column(j, j) for j in range(2)], 200, 0)
    assert (tuple(diag["AA_ci95"]), tuple(diag["BWT_ci95"])) == (expected["AA"], expected["BWT"])

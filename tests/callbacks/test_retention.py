"""Retention of general ability on the tiny model: held-out tasks scored before the first task and after the last."""

import json

import pytest

from nlora_lightning.callbacks import ForgettingMetrics
from nlora_lightning.reporting.compare import compare_runs
from nlora_lightning.reporting.predictions import read_predictions, scores_by_id
from nlora_lightning.reporting.report import write_report


@pytest.mark.slow
def test_held_out_tasks_are_scored_on_the_base_model_and_after_the_last_task(tiny, tiny_llama_init, make_trainer, tmp_path):
    module = tiny.module(tiny_llama_init)
    data = tiny.data(tasks=["reviews", "topics"], held_out_tasks=["intents"])
    trainer = make_trainer(name="retention", callbacks=[ForgettingMetrics(forward_transfer=False, bootstrap_resamples=0)])
    trainer.fit(module, datamodule=data)
    run = tmp_path / "retention"
    metrics = json.loads((run / "cl_metrics.json").read_text())
    records = read_predictions(run)
    base_scores, final_scores = scores_by_id(records, None, "intents"), scores_by_id(records, 1, "intents")
    assert len(base_scores) == len(final_scores) == 8
    base, final = sum(base_scores.values()) / 8, sum(final_scores.values()) / 8
    assert metrics["retention"]["tasks"] == {"intents": {"base": pytest.approx(base), "final": pytest.approx(final),
                                                        "change": pytest.approx(final - base)}}
    assert metrics["retention"]["mean_change"] == pytest.approx(final - base)
    assert not scores_by_id(records, None, "reviews")  # no forward transfer: sequence tasks are not scored before training
    report = write_report(run).read_text()
    assert "## Retention of general ability" in report and "| intents |" in report
    assert compare_runs([run])[0]["retention"] == pytest.approx(final - base)

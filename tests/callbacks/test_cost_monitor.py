"""Cost columns on the tiny model: time, tokens/s, memory, trainable parameters and stored state per task."""

import json

import pytest
import torch

from nlora_lightning.callbacks import CostMonitor, ForgettingMetrics, RunReport
from nlora_lightning.callbacks.cost_monitor import state_bytes
from nlora_lightning.reporting.compare import compare_runs


def test_state_bytes_counts_each_storage_once():
    weight = torch.zeros(10)
    assert state_bytes({"a": weight, "view": weight[:5], "nested": [torch.zeros(3, dtype=torch.float64)], "n": 3}) == 40 + 24


@pytest.mark.slow
def test_run_info_report_and_compare_carry_the_cost_of_each_task(tiny, tiny_llama_init, make_trainer, tmp_path):
    module = tiny.module(tiny_llama_init)  # one LoRA adapter per task (N-LoRA's default)
    trainer = make_trainer(name="cost", callbacks=[ForgettingMetrics(forward_transfer=False, bootstrap_resamples=0), CostMonitor(),
                                                   RunReport()])
    trainer.fit(module, datamodule=tiny.data(tasks=["reviews", "topics"]))
    run = tmp_path / "cost"
    cost = json.loads((run / "run_info.json").read_text())["cost"]
    first, second = cost["per_task"]
    assert (first["task"], second["task"]) == ("reviews", "topics")
    for entry in (first, second):
        assert entry["train_time_s"] > 0 and entry["eval_time_s"] > 0 and entry["train_tokens_per_s"] > 0
        assert entry["trainable_params"] > 0 and entry["eval_tokens_per_s"] > 0
    # a new adapter per task: the stored state grows with the number of tasks
    assert second["state_bytes"] > first["state_bytes"] > 0
    assert cost["train_time_s"] == pytest.approx(first["train_time_s"] + second["train_time_s"], abs=2e-3)
    assert cost["peak_memory_bytes"] > 0 and cost["peak_memory_source"] == "process_rss_high_water_mark"
    report = (run / "report.md").read_text()
    assert "## Cost" in report and "| reviews |" in report and "process resident-set high-water mark" in report
    row = compare_runs([run])[0]
    assert row["state_bytes"] == second["state_bytes"] and row["peak_memory_bytes"] == cost["peak_memory_bytes"]

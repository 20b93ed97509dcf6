import csv
import logging

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from nlora_lightning import MethodConfig
from nlora_lightning.analysis import pairwise_analysis
from nlora_lightning.callbacks import CollisionMonitor

NLORA = [MethodConfig("nlora_l1", weight=0.01)]
TASKS = ["reviews", "topics"]


def read_square(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    values = torch.tensor([[float(v) for v in row[1:]] for row in rows[1:]], dtype=torch.float64)
    return rows[0], [row[0] for row in rows[1:]], values


class ReadTablesAtEpochStart(Callback):
    """Reads collision.csv as it is when each epoch starts (after the previous stage's end)."""

    def __init__(self):
        self.names_by_epoch = {}

    def on_train_epoch_start(self, trainer, pl_module):
        path = trainer.log_dir + "/collision.csv"
        try:
            self.names_by_epoch[trainer.current_epoch] = read_square(path)[1]
        except FileNotFoundError:
            self.names_by_epoch[trainer.current_epoch] = None


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.1, 2, True, "0.1"])
def test_rejects_tau_outside_the_open_unit_interval(tau):
    with pytest.raises(ValueError, match="tau"):
        CollisionMonitor(tau=tau)


def test_state_holds_the_last_figures_and_the_key_names_tau():
    monitor = CollisionMonitor(tau=0.05)
    monitor.results = {"stages": [0, 1], "collision_mean": 0.25}
    restored = CollisionMonitor(tau=0.05)
    restored.load_state_dict(monitor.state_dict())
    assert restored.results == monitor.results
    assert "0.05" in monitor.state_key and monitor.state_key != CollisionMonitor(tau=0.1).state_key


@pytest.mark.slow
def test_stage_ends_write_tables_that_match_the_adapters(tiny, tiny_llama_init, make_trainer, tmp_path):
    module = tiny.module(tiny_llama_init, methods=NLORA)
    reader = ReadTablesAtEpochStart()
    trainer = make_trainer(callbacks=[CollisionMonitor(tau=0.02), reader])
    trainer.fit(module, datamodule=tiny.data())
    run = tmp_path / "run"

    assert reader.names_by_epoch == {0: None, 1: ["reviews"]}  # stage 0's end wrote a 1 x 1 table
    expected = pairwise_analysis({s: module.task_update_factors(s) for s in module.trained_stages()}, tau=0.02)
    for name, matrix in (("collision.csv", expected.collision), ("orthogonality.csv", expected.overlap)):
        header, rows, values = read_square(run / name)
        assert header == ["task", *TASKS] and rows == TASKS
        assert torch.allclose(values, matrix, atol=2e-6)
    assert 0.0 <= expected.collision_mean <= 1.0 and expected.overlap_mean > 0.0

    with open(run / "adapter_stats.csv", newline="") as handle:
        stats = list(csv.DictReader(handle))
    layers = list(module.adapters.layers)
    assert [(r["task"], r["layer"]) for r in stats] == [(t, layer) for t in TASKS for layer in layers]
    assert float(stats[-1]["nuclear_norm"]) == pytest.approx(float(expected.nuclear_norm[1, -1]), rel=1e-5)

    logged = trainer.callback_metrics
    assert float(logged["analysis/collision_mean"]) == pytest.approx(expected.collision_mean, abs=1e-6)
    assert float(logged["analysis/overlap_mean"]) == pytest.approx(expected.overlap_mean, abs=1e-6)
    assert float(logged["analysis/nuclear_norm_mean"]) == pytest.approx(expected.nuclear_norm_mean, rel=1e-5)


@pytest.mark.slow
def test_without_validation_the_tables_are_written_at_train_end(tiny, tiny_llama_init, make_trainer, tmp_path):
    module = tiny.module(tiny_llama_init)
    trainer = make_trainer(callbacks=[CollisionMonitor()], limit_val_batches=0)
    trainer.fit(module, datamodule=tiny.data())
    header, rows, values = read_square(tmp_path / "run" / "collision.csv")
    assert rows == TASKS and values.shape == (2, 2)


@pytest.mark.slow
def test_full_fine_tuning_only_logs_one_info_line(tiny, tiny_llama_init, make_trainer, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nlora_lightning.callbacks.collision_monitor")
    trainer = make_trainer(callbacks=[CollisionMonitor()])
    trainer.fit(tiny.module(tiny_llama_init, adapters="none"), datamodule=tiny.data())
    messages = [r.getMessage() for r in caplog.records if r.name == "nlora_lightning.callbacks.collision_monitor"]
    assert len(messages) == 1 and "nothing to analyse" in messages[0] and "full fine-tuning" in messages[0]
    assert not any((tmp_path / "run" / name).exists() for name in ("collision.csv", "orthogonality.csv", "adapter_stats.csv"))
    assert (tmp_path / "run" / "cl_metrics.json").is_file()  # the fit itself ran to the end
    assert not any(key.startswith("analysis/") for key in trainer.callback_metrics)

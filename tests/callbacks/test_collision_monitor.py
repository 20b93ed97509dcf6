import csv
import logging

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from nlora_lightning import MethodConfig
from nlora_lightning.callbacks import CollisionMonitor

NLORA = [MethodConfig("nlora_l1", weight=0.01)]
TASKS = ["reviews", "topics"]


def read_square(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    values = torch.tensor([[float(v) for v in row[1:]] for row in rows[1:]], dtype=torch.float64)
    return rows[0], [row[0] for row in rows[1:]], values


def dense_updates(module):
    """Per stage, layer -> the applied update ``scaling * B A`` from the stored raw factors (float64)."""
    snapshots = module.adapters.snapshots
    return [{name: snap.scaling * snap.B[name].double() @ snap.A[name].double() for name in snap.A}
            for snap in (snapshots[stage] for stage in sorted(snapshots))]


def independent_pair_tables(updates, tau):
    """Collision and overlap tables (layer means) from dense updates, written out entry by entry."""
    tasks = len(updates)
    collision, overlap = torch.zeros(tasks, tasks, dtype=torch.float64), torch.zeros(tasks, tasks, dtype=torch.float64)
    for i in range(tasks):
        for j in range(tasks):
            rates, overlaps = [], []
            for name, dw_i in updates[i].items():
                dw_j = updates[j][name]
                both = (dw_i.abs() > tau * dw_i.abs().max()) & (dw_j.abs() > tau * dw_j.abs().max())
                rates.append(both.double().mean())
                norm = torch.linalg.matrix_norm
                overlaps.append(norm(dw_i.T @ dw_j) / (norm(dw_i) * norm(dw_j)))
            collision[i, j], overlap[i, j] = torch.stack(rates).mean(), torch.stack(overlaps).mean()
    return collision, overlap


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
    layers = list(module.adapters.layers)
    updates = dense_updates(module)
    collision, overlap = independent_pair_tables(updates, tau=0.02)
    for name, matrix in (("collision.csv", collision), ("orthogonality.csv", overlap)):
        header, rows, values = read_square(run / name)
        assert header == ["task", *TASKS] and rows == TASKS
        assert torch.allclose(values, matrix, atol=2e-6), name
    assert 0.0 < collision[0, 1] < collision[0, 0] and 0.0 < overlap[0, 1] < 1.0  # informative values, not 0 or 1

    with open(run / "adapter_stats.csv", newline="") as handle:
        stats = list(csv.DictReader(handle))
    assert [(r["task"], r["layer"]) for r in stats] == [(t, layer) for t in TASKS for layer in layers]
    nuclear = torch.linalg.svdvals(updates[1][layers[-1]]).sum()
    assert float(stats[-1]["nuclear_norm"]) == pytest.approx(float(nuclear), rel=1e-5)

    logged = trainer.callback_metrics
    assert float(logged["analysis/collision_mean"]) == pytest.approx(float(collision[0, 1]), abs=1e-6)
    assert float(logged["analysis/overlap_mean"]) == pytest.approx(float(overlap[0, 1]), abs=1e-6)
    nuclear_mean = torch.stack([torch.linalg.svdvals(dw).sum() for u in updates for dw in u.values()]).mean()
    assert float(logged["analysis/nuclear_norm_mean"]) == pytest.approx(float(nuclear_mean), rel=1e-5)


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

"""docs/reuse.md's example, run as written, and the fit-start rules it relies on (issue 13, items 1, 2, 4)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from nlora_lightning.callbacks import CollisionMonitor, ForgettingMetrics, FreezePreviousAdapters
from nlora_lightning.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


def example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "reuse.md").read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/reuse.md should hold exactly one python block: the example"
    return blocks[0]


def run(code: str) -> dict:
    namespace = {"__name__": "reuse_example"}
    exec(compile(code, str(REPO / "docs" / "reuse.md"), "exec"), namespace)
    return namespace


@pytest.fixture
def example(tmp_path, monkeypatch) -> dict:
    """The example's definitions (everything before the run), in a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    code = example_code()
    return run(code[: code.index("module, data = ")])


def accuracy_after(ns: dict, module, data, stage: int, task: int) -> float:
    """Accuracy on ``task`` with the adapters as they were when ``stage`` ended: an independent forward."""
    A = torch.zeros(ns["TASKS"], ns["RANK"], ns["DIM"])
    B = torch.zeros(ns["TASKS"], ns["HIDDEN"], ns["RANK"])
    for t in range(stage + 1):
        A[t], B[t] = module.finished[t]
    x, y = data.splits[task][1].tensors
    with torch.no_grad():
        update = torch.einsum("toR,tRi->oi", B, A)
        logits = module.head(torch.relu(module.hidden(x) + x @ update.T))
    return float((logits.argmax(-1) == y).float().mean())


@pytest.mark.slow
def test_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = run(example_code())
    module, data, trainer, metrics = ns["module"], ns["data"], ns["trainer"], ns["metrics"]
    tasks = ns["TASKS"]
    assert trainer.reload_dataloaders_every_n_epochs == 1 and trainer.current_epoch == tasks * ns["EPOCHS"]
    assert sorted(module.finished) == list(range(tasks))
    for t in range(tasks):  # every adapter, finished at the end of its own stage, is bit-identical afterwards
        assert torch.equal(module.A[t], module.finished[t][0]) and torch.equal(module.B[t], module.finished[t][1])
        assert module.B[t].abs().sum() > 0  # and was trained
    matrix = metrics.results["acc_matrix"]
    for stage in range(tasks):
        for task in range(tasks):
            assert matrix[stage][task] == pytest.approx(accuracy_after(ns, module, data, stage, task), abs=1e-6)
    seen = [matrix[tasks - 1][t] for t in range(tasks)]
    assert metrics.results["AA"] == pytest.approx(sum(seen) / tasks)
    assert metrics.results["BWT"] == pytest.approx(sum(matrix[-1][t] - matrix[t][t] for t in range(tasks - 1)) / (tasks - 1))
    run_dir = tmp_path / "runs" / "reuse" / "lightning_logs" / "version_0"
    assert {"acc_matrix.csv", "cl_metrics.json", "collision.csv", "adapter_stats.csv"} <= {p.name for p in run_dir.iterdir()}


def recording(ns: dict, starts_itself: bool):
    """The example's classes, recording the protocol calls and the stage of every training loader."""

    class Module(ns["TinyContinualMLP"]):
        def __init__(self):
            super().__init__()
            self.calls = []

        def start_task(self, stage):
            self.calls.append(("start", stage))
            super().start_task(stage)

        def finish_task(self, stage):
            self.calls.append(("finish", stage))
            super().finish_task(stage)

        if starts_itself:
            def configure_model(self):  # like ContinualLightningModule: parameters ready, stage 0 started here
                if self.current_task < 0:
                    self.start_task(0)

    class Data(ns["SyntheticTasks"]):
        def __init__(self):
            super().__init__()
            self.loaded_stages = []

        def train_dataloader(self):
            self.loaded_stages.append(self.stage_for_epoch(self.trainer.current_epoch))
            return super().train_dataloader()

    return Module(), Data()


def quick_trainer(callbacks, **kwargs) -> pl.Trainer:
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   limit_train_batches=2, num_sanity_val_steps=0)
    return pl.Trainer(callbacks=callbacks, **{**options, **kwargs})


@pytest.mark.slow
@pytest.mark.parametrize("starts_itself", [False, True], ids=["callback_starts_stage_0", "module_starts_stage_0"])
def test_unset_trainer_settings_are_set_and_each_stage_trains_on_its_task(example, starts_itself):
    # No max_epochs, no reload_dataloaders_every_n_epochs: before issue 13 every stage trained on task 0's loader.
    module, data = recording(example, starts_itself)
    trainer = quick_trainer([FreezePreviousAdapters(verbose=False), ForgettingMetrics(forward_transfer=False, verbose=False)])
    trainer.fit(module, datamodule=data)
    tasks, epochs = example["TASKS"], example["EPOCHS"]
    assert trainer.max_epochs == tasks * epochs and trainer.reload_dataloaders_every_n_epochs == 1
    assert data.loaded_stages == [s for s in range(tasks) for _ in range(epochs)]
    # Stage 0 started exactly once (by the callback or by the module), -1 never finished.
    assert module.calls == [("start", 0), ("finish", 0), ("start", 1), ("finish", 1), ("start", 2), ("finish", 2)]


def test_max_epochs_that_does_not_fit_stops_the_fit(example):
    module, data = example["TinyContinualMLP"](), example["SyntheticTasks"]()
    trainer = quick_trainer([FreezePreviousAdapters(verbose=False), CollisionMonitor()], max_epochs=5)
    with pytest.raises(ConfigurationError, match=r"max_epochs=5\) does not fit the task sequence of 3 stages \(6 epochs\)"):
        trainer.fit(module, datamodule=data)
    assert trainer.global_step == 0


def test_forgetting_metrics_alone_checks_the_settings_too(example):
    module, data = example["TinyContinualMLP"](), example["SyntheticTasks"]()
    module.start_task(0)
    trainer = quick_trainer([ForgettingMetrics(verbose=False)], max_epochs=7)
    with pytest.raises(ConfigurationError, match=r"^ForgettingMetrics: Trainer\(max_epochs=7\)"):
        trainer.fit(module, datamodule=data)


@pytest.mark.parametrize("optimizes_all", [False, True])
def test_module_overriding_configure_model_must_start_stage_0(example, caplog, optimizes_all):
    class Waits(example["TinyContinualMLP"]):
        def configure_model(self):
            pass

        if optimizes_all:
            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=0.05)

    trainer = quick_trainer([FreezePreviousAdapters(verbose=False)])
    if optimizes_all:  # its optimizer builds: the callback stops the fit at fit start
        with pytest.raises(ConfigurationError, match="still at current_task = -1 .* must call self.start_task\\(0\\)"):
            trainer.fit(Waits(), datamodule=example["SyntheticTasks"]())
    else:  # its own configure_optimizers fails first; the callback names the cause beside it
        with caplog.at_level(logging.ERROR), pytest.raises(ValueError, match="empty parameter list"):
            trainer.fit(Waits(), datamodule=example["SyntheticTasks"]())
        assert "must call self.start_task(0)" in caplog.text

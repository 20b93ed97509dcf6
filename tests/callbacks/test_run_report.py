import json

import matplotlib.image
import pytest
from lightning.pytorch.callbacks import Callback

from nlora_lightning import MethodConfig
from nlora_lightning.callbacks import CollisionMonitor, RunReport

NLORA = [MethodConfig("nlora_l1", weight=0.01)]


class FailAtTrainStart(Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("boom at train start")


def test_state_carries_start_time_and_elapsed_time_into_a_resumed_fit():
    report = RunReport()
    report.load_state_dict({"started": "2025-01-01T00:00:00+00:00", "train_time_s": 10.5})
    assert report.state_dict() == {"started": "2025-01-01T00:00:00+00:00", "train_time_s": 10.5}


@pytest.mark.slow
def test_fit_writes_run_info_report_and_readable_plots(tiny, tiny_llama_init, make_trainer, tmp_path):
    trainer = make_trainer(callbacks=[CollisionMonitor(), RunReport()])
    trainer.fit(tiny.module(tiny_llama_init, methods=NLORA), datamodule=tiny.data())
    run = tmp_path / "run"

    info = json.loads((run / "run_info.json").read_text())
    assert info["method"] == "nlora" and info["model"] == "random_init" and info["tasks"] == ["reviews", "topics"]
    assert info["status"] == "finished" and info["train_time_s"] > 0 and info["started"] <= info["finished"]
    hp = info["hyperparameters"]
    assert hp["lora"] == {"r": 2, "alpha": 8, "dropout": 0.0, "target_modules": None}
    assert hp["methods"] == [{"name": "nlora_l1", "weight": 0.01, "task_weights": {}, "options": {}}]
    assert hp["optimizer"] == "AdamW" and hp["lr"] == pytest.approx(1e-2)
    assert (hp["epochs_per_task"], hp["batch_size"], hp["max_train_samples"], hp["max_eval_samples"]) == (1, 8, 16, 8)
    assert hp["seed"] == 0 and hp["collision_tau"] == 0.01

    report = (run / "report.md").read_text()
    metrics = json.loads((run / "cl_metrics.json").read_text())
    assert "1. reviews\n2. topics" in report
    assert f"| {100 * metrics['AA']:.2f} |" in report and "AA" in report
    assert "Mean collision over task pairs i < j" in report and "## Notes" not in report
    for name in ("acc_matrix.png", "collision.png", "orthogonality.png", "sparsity.png"):
        assert f"]({name})" in report
        image = matplotlib.image.imread(run / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100


@pytest.mark.slow
def test_failed_fit_is_recorded(tiny, tiny_llama_init, make_trainer, tmp_path):
    trainer = make_trainer(callbacks=[RunReport(), FailAtTrainStart()])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(tiny.module(tiny_llama_init), datamodule=tiny.data())
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["status"] == "failed" and "RuntimeError: boom at train start" in info["error"]
    assert info["method"] == "inclora" and info["tasks"] == ["reviews", "topics"]
    assert not (tmp_path / "run" / "report.md").exists()


def test_exception_handler_never_raises_when_the_run_directory_is_unwritable(tmp_path, caplog):
    from types import SimpleNamespace

    (tmp_path / "a-file").write_text("")
    trainer = SimpleNamespace(is_global_zero=True, logger=SimpleNamespace(log_dir=str(tmp_path / "a-file" / "run")),
                              default_root_dir=str(tmp_path), optimizers=[], callbacks=[])
    report = RunReport()
    report.on_exception(trainer, SimpleNamespace(method_name="nlora"), PermissionError("the error being handled"))
    assert "run_info.json could not record the failed run" in caplog.text

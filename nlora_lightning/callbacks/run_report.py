"""RunReport: ``run_info.json`` (what was run, how long, how it ended) and ``report.md`` at the end of a fit."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nlora_lightning.callbacks.collision_monitor import CollisionMonitor
from nlora_lightning.callbacks.cost_monitor import CostMonitor
from nlora_lightning.callbacks.forgetting_metrics import ForgettingMetrics, run_dir
from nlora_lightning.io import write_json_atomic

__all__ = ["RunReport", "collect_run_info"]

log = logging.getLogger(__name__)

_DATA_SETTINGS = ("epochs_per_task", "batch_size", "max_train_samples", "max_eval_samples", "validation_samples", "evaluate_on")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def collect_run_info(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Method, model, tasks and key hyperparameters of a fit (any attribute missing is ``None``)."""
    hparams = dict(getattr(pl_module, "hparams", None) or {})
    datamodule = getattr(trainer, "datamodule", None)
    lora = _plain(getattr(pl_module, "lora_config", None)) or hparams.get("lora")
    methods = getattr(pl_module, "methods", None) or hparams.get("methods") or []
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    group = optimizer.param_groups[0] if optimizer is not None and optimizer.param_groups else {}
    hyperparameters: dict[str, Any] = {
        "adapters": hparams.get("adapters"),
        "lora": {k: lora.get(k) for k in ("r", "alpha", "dropout", "target_modules")} if isinstance(lora, dict) else None,
        "methods": [
            {k: r.get(k) for k in ("name", "weight", "task_weights", "options")} for r in map(_plain, methods)
        ],
        "optimizer": type(optimizer).__name__ if optimizer is not None else None,
        "lr": group.get("lr"),
        "weight_decay": group.get("weight_decay"),
        "evaluation": _plain(getattr(pl_module, "evaluation", None)) or hparams.get("evaluation"),
        "torch_dtype": hparams.get("torch_dtype"),
        "precision": str(trainer.precision),
        **{key: getattr(datamodule, key, None) for key in _DATA_SETTINGS},
        "seed": hparams.get("seed", getattr(pl_module, "seed", None)),
        "data_seed": getattr(datamodule, "seed", None),
    }
    for callback in trainer.callbacks:  # settings of the measuring callbacks belong to the run's record
        if isinstance(callback, CollisionMonitor):
            hyperparameters["collision_tau"] = callback.tau
        elif isinstance(callback, ForgettingMetrics):
            hyperparameters["forward_transfer"] = callback.forward_transfer
    info = {
        "method": getattr(pl_module, "method_name", None) or type(pl_module).__name__,
        "model": hparams.get("model_name_or_path") or "random_init",
        "tasks": list(getattr(datamodule, "task_names", None) or []),
        "held_out_tasks": list(getattr(datamodule, "held_out_tasks", None) or []),
        "hyperparameters": hyperparameters,
    }
    counts = datamodule.reference_counts() if hasattr(datamodule, "reference_counts") else {}
    if counts:  # natural-instructions tasks: how many instances had no usable reference, or several
        info["reference_counts"] = counts
    return info


class RunReport(Callback):
    """Records the run in ``run_info.json`` and writes ``report.md`` with plots when the fit ends.

    ``run_info.json`` (rank 0, atomically) holds ``method``, ``model``, ``tasks``, for natural-instructions
    tasks ``reference_counts`` (instances without a usable reference, with several),
    ``hyperparameters``, ``status`` (``running``, ``finished``, ``failed`` or ``interrupted``),
    ``started`` and, once the fit ends, ``finished`` and ``train_time_s`` (wall time of the fit,
    summed over resumed runs). At the end of the fit, :func:`nlora_lightning.reporting.report.write_report`
    turns the run's files (``cl_metrics.json``, ``collision.csv``, ...) into ``report.md`` and PNGs;
    ``nlora report RUN_DIR`` regenerates them later.

    Example:
        >>> trainer = pl.Trainer(callbacks=[CollisionMonitor(), RunReport()])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__()
        self.info: Optional[dict[str, Any]] = None
        self._fit_started_at: Optional[float] = None
        self._earlier_time_s = 0.0  # time spent in the fits this one resumes
        self._started: Optional[str] = None

    def _train_time_s(self) -> float:
        running = time.monotonic() - self._fit_started_at if self._fit_started_at is not None else 0.0
        return round(self._earlier_time_s + running, 3)

    def _write(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero and self.info is not None:
            write_json_atomic(run_dir(trainer) / "run_info.json", self.info)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started_at = time.monotonic()
        self._started = self._started or _now()
        self.info = {**collect_run_info(trainer, pl_module), "status": "running", "started": self._started}
        self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.info is None:
            return
        self.info.update(status="finished", finished=_now(), train_time_s=self._train_time_s())
        costs = [cb.summary() for cb in trainer.callbacks if isinstance(cb, CostMonitor)]
        if costs:  # time, tokens/s, memory, parameters and stored bytes per task (CostMonitor)
            self.info["cost"] = costs[0]
        self._write(trainer)
        if not trainer.is_global_zero:
            return
        from nlora_lightning.reporting.report import write_report

        try:
            path = write_report(run_dir(trainer))
        except Exception:  # the training results are safe on disk; the report can be regenerated
            log.exception("report.md could not be written; regenerate it with `nlora report %s`", run_dir(trainer))
        else:
            log.info("report: %s", path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.info is None:  # failed before the fit started: record what is known
            self.info = {"method": getattr(pl_module, "method_name", None) or type(pl_module).__name__}
        # Stopped from outside (Ctrl+C, a scheduler's SIGTERM): resumable, not a failure of the run.
        stopped = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        status = "interrupted" if stopped else "failed"
        cause = ("stopped by SIGTERM" if isinstance(exception, SIGTERMException) else "stopped by SIGINT (Ctrl+C)") if stopped \
            else f"{type(exception).__name__}: {exception}"
        self.info.update(status=status, error=cause, finished=_now(), train_time_s=self._train_time_s())
        try:
            self._write(trainer)
        except Exception as error:  # raising here would bury the exception being handled under a second one
            log.warning("run_info.json could not record the %s run: %s: %s", status, type(error).__name__, error)

    def state_dict(self) -> dict[str, Any]:
        return {"started": self._started, "train_time_s": self._train_time_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._started = state_dict.get("started")
        self._earlier_time_s = float(state_dict.get("train_time_s") or 0.0)

"""ForgettingMetrics: the accuracy matrix R[i][j], AA, BWT, forgetting and FWT, logged and written."""

from __future__ import annotations

import logging
import math
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from nlora_lightning.callbacks.protocol import TaskSequence
from nlora_lightning.callbacks.sequence_settings import apply_sequence_settings
from nlora_lightning.io import write_json_atomic, write_text_atomic
from nlora_lightning.metrics import AccuracyMatrix, continual_metrics, forward_transfer
from nlora_lightning.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_cl_intervals
from nlora_lightning.metrics.retention import retention_summary
from nlora_lightning.metrics.text import score_prediction
from nlora_lightning.reporting.baselines import run_baselines
from nlora_lightning.reporting.predictions import (
    PREDICTIONS_FILE,
    aligned_scores,
    keep_stages,
    prediction_record,
    read_predictions,
    replace_stage,
    scores_by_id,
)
from nlora_lightning.run_layout import run_dir  # re-exported: callers import it from here

__all__ = ["ForgettingMetrics", "run_dir"]

# The CL metrics are computed from counts already summed over ranks; Lightning cannot know that.
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")

log = logging.getLogger(__name__)


class ForgettingMetrics(Callback):
    """Fills the accuracy matrix during one ``fit`` over a task sequence and reports CL metrics.

    After each stage ends, the tasks evaluated then (the data module's ``eval_schedule``: every
    seen task, or under ``diagonal_final`` the stage's own task until the last stage; with forward
    transfer also the next) fill row i of R. At every stage end it logs ``cl/AA``, ``cl/BWT``,
    ``cl/forgetting``, ``cl/FWT`` over the tasks seen so far (where defined), and writes into the
    run's log dir:

    - ``acc_matrix.csv``: R as a table (rows: after each stage; columns: tasks; blank: not evaluated);
    - ``cl_metrics.json``: ``{"tasks", "acc_matrix", "AA", "BWT", "forgetting", "FWT", "AA_ci95",
      "BWT_ci95", "bootstrap", "AA_chance", "AA_majority", "never_learned", "baselines",
      "eval_schedule"}`` (null: not evaluated or undefined; forgetting is null under
      ``diagonal_final``, which does not evaluate R[i][j] for j < i < T-1);
    - ``cl_details.json``: zero-shot baseline, held-out tasks, metrics after each stage;
    - ``predictions.jsonl``: every evaluated sample's stage, task, id, prediction, label and score
      (see :mod:`nlora_lightning.reporting.predictions`); a resumed run keeps the lines of the
      stages its checkpoint had finished and rewrites the others.

    Trivial baselines (see :mod:`nlora_lightning.reporting.baselines`), when the data module gives
    each task's training answers (``train_labels(task)``) and label set (``label_names(task)``):
    ``AA_chance`` (1 / labels), ``AA_majority`` (always the most frequent training answer, scored
    on the test set) and ``never_learned``, the tasks whose score right after their own training is
    not above their majority score beyond the bootstrap interval.

    ``AA_ci95`` and ``BWT_ci95`` are 95 % percentile bootstrap intervals over test samples, written
    once the last stage is evaluated: each task's samples are resampled with replacement, with the
    same indices after the task's own training and after the last stage (BWT stays paired); see
    :mod:`nlora_lightning.metrics.bootstrap`.

    Counts are summed over DDP ranks (a torchmetrics state) and predictions gathered; only rank 0 writes.

    Args:
        forward_transfer: Evaluate the base model on every task before training (zero-shot
            baseline b) and each next task before it is trained, to report FWT. Off: only seen
            tasks are evaluated (the paper's protocol) and FWT is null.
        verbose: Print the matrix and metrics at the end of the fit.
        bootstrap_resamples: Resamples of the AA/BWT intervals (0: no intervals).
        bootstrap_seed: Seed of the resampling.

    Raises:
        ValueError: For a negative ``bootstrap_resamples``.

    Example:
        >>> trainer = pl.Trainer(callbacks=[ForgettingMetrics(forward_transfer=False)])  # doctest: +SKIP
    """

    def __init__(self, forward_transfer: bool = True, verbose: bool = True, bootstrap_resamples: int = DEFAULT_RESAMPLES,
                 bootstrap_seed: int = DEFAULT_SEED) -> None:
        super().__init__()
        if bootstrap_resamples < 0:
            raise ValueError(f"bootstrap_resamples must be >= 0, got {bootstrap_resamples}")
        self.forward_transfer = forward_transfer
        self.verbose = verbose
        self.bootstrap_resamples = bootstrap_resamples
        self.bootstrap_seed = bootstrap_seed
        self.eval_schedule = "full"
        self._predictions: dict[int, list[Any]] = {}  # per task column: SamplePrediction
        self.metric: Optional[AccuracyMatrix] = None
        self._restored: Optional[dict[str, Any]] = None
        self.history: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(forward_transfer=self.forward_transfer)

    # ----- wiring -----------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, TaskSequence):
            raise TypeError(f"ForgettingMetrics needs a TaskSequence data module; got {type(datamodule).__name__}")
        datamodule.evaluate_next_task = self.forward_transfer
        datamodule.zero_shot_baseline = self.forward_transfer
        datamodule.retention_baseline = bool(getattr(datamodule, "held_out_tasks", None))  # base-model scores for retention
        if self.forward_transfer or datamodule.retention_baseline:
            trainer.num_sanity_val_steps = float("inf")  # the baseline needs the whole test split
        self.eval_schedule = getattr(datamodule, "eval_schedule", "full")
        self._rows, self._cols = datamodule.num_stages, len(datamodule.all_task_names)
        self._held_out = self._cols - len(datamodule.task_names)
        self.metric = AccuracyMatrix(self._rows + 1, self._cols).to(pl_module.device)  # last row: zero-shot

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        apply_sequence_settings(trainer, "ForgettingMetrics")  # its rows are stages: the fit must run them all
        if self._restored is None:
            if trainer.is_global_zero:  # a fresh fit: no line of an earlier run in this directory may stay
                keep_stages(run_dir(trainer), [])
            return
        if trainer.is_global_zero:
            finished = [i for i in range(self._rows) if self._restored["total"][i].sum() > 0]
            keep_stages(run_dir(trainer), finished + ([None] if self._restored["total"][self._rows].sum() > 0 else []))
        if trainer.global_rank == 0:  # restored counts are global: add them on one rank only
            self.metric.correct += self._restored["correct"].to(self.metric.correct)
            self.metric.total += self._restored["total"].to(self.metric.total)
        done = {trainer.datamodule.stage_for_epoch(e) for e in range(trainer.current_epoch) if trainer.datamodule.is_stage_end(e)}
        missing = sorted(stage for stage in done if self._restored["total"][stage].sum() == 0)
        if missing:
            log.warning(
                "the checkpoint holds no evaluation for finished stage(s) %s: it was saved on a task's last batch, "
                "before the task-end evaluation, and Lightning resumes it as a finished epoch. Those rows of the "
                "accuracy matrix stay empty; use nlora_lightning.callbacks.ContinualCheckpoint for step-based saves.",
                missing,
            )
        if self._restored.get("baseline_done"):
            trainer.datamodule.zero_shot_baseline = trainer.datamodule.retention_baseline = False
            trainer.num_sanity_val_steps = 0
        self.history = list(self._restored.get("history", []))
        self._restored = None

    # ----- collecting -------------------------------------------------------------------------
    def _row(self, trainer: pl.Trainer) -> Optional[int]:
        if trainer.state.fn != TrainerFn.FITTING:
            return None
        datamodule = trainer.datamodule
        if trainer.sanity_checking:
            return self._rows if datamodule.zero_shot_baseline or getattr(datamodule, "retention_baseline", False) else None
        if not datamodule.is_stage_end(trainer.current_epoch):
            return None
        return datamodule.stage_for_epoch(trainer.current_epoch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        row = self._row(trainer)
        if row is None or not outputs:
            return
        task = int(outputs["task"])
        self.metric.update(row, task, outputs["correct"], outputs["total"])
        self._predictions.setdefault(task, []).extend(outputs.get("predictions") or [])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = self._row(trainer)
        if row is None:
            return
        correct, total = self._global_counts()
        acc = torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, float("nan")))
        self._evaluated = total
        predictions = _gather_across_ranks(self._predictions)
        self._predictions = {}
        stage = row if row < self._rows else None
        if trainer.is_global_zero:
            names = trainer.datamodule.all_task_names
            records = [prediction_record(stage, names[task], sample) for task in sorted(predictions)
                       for sample in sorted(predictions[task], key=lambda p: (p.sample_id is None, p.sample_id))]
            replace_stage(run_dir(trainer), stage, records)
        self._summarise(trainer, pl_module, acc, stage=stage)

    def _global_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        with self.metric.sync_context(should_sync=True, should_unsync=True):
            return self.metric.correct.detach().cpu().clone(), self.metric.total.detach().cpu().clone()

    # ----- reporting --------------------------------------------------------------------------
    def _metrics(self, acc: torch.Tensor, zero_shot: Optional[torch.Tensor], stage: int, num_tasks: int) -> dict[str, float]:
        """AA, BWT, forgetting and FWT after ``stage``, over the tasks seen so far (all tasks for joint training)."""
        if self._rows != num_tasks:  # one stage over all tasks: only AA applies
            return {k: float(v) for k, v in continual_metrics(acc[: stage + 1, :num_tasks]).items()}
        metrics = continual_metrics(acc[: stage + 1, : stage + 1])
        if self.eval_schedule == "diagonal_final":  # the max over earlier rows needs entries this schedule skips
            metrics["forgetting"] = acc.new_tensor(float("nan"))
        if zero_shot is not None:  # R[j-1][j] - b_j for every j evaluated before its own training, the next task included
            metrics["FWT"] = forward_transfer(acc[: stage + 1, : min(stage + 2, num_tasks)], zero_shot)
        return {k: float(v) for k, v in metrics.items()}

    def _summarise(self, trainer: pl.Trainer, pl_module: pl.LightningModule, acc: torch.Tensor, stage: Optional[int]) -> None:
        datamodule = trainer.datamodule
        T = len(datamodule.task_names)
        zero_shot = acc[self._rows, :T] if self.forward_transfer else None
        if stage is None:  # the zero-shot baseline, before any training
            values = {"cl/zero_shot_mean": float(zero_shot.nanmean())} if zero_shot is not None else {}
        else:
            values = {f"cl/{k}": v for k, v in self._metrics(acc, zero_shot, stage, T).items()}
            values.update({f"cl/acc/{name}": float(acc[stage, j]) for j, name in enumerate(datamodule.all_task_names)
                           if not math.isnan(float(acc[stage, j]))})
            self.history.append({"stage": stage, "stage_name": datamodule.stage_name(stage), **values})
        for key, value in values.items():
            if math.isfinite(value):
                pl_module.log(key, value, rank_zero_only=True)
        completed = [i for i in range(self._rows) if not torch.isnan(acc[i, :T]).all()]
        last = completed[-1] if completed else None
        self.results = {
            "tasks": datamodule.task_names,
            "acc_matrix": acc[: self._rows, :T].tolist(),
            **(self._metrics(acc, zero_shot, last, T) if last is not None else {}),
            "completed_stages": 0 if last is None else last + 1,
            "eval_schedule": self.eval_schedule,
            **_metric_names(datamodule),
            "retention": _retention(acc, datamodule, self._rows),
        }
        if trainer.is_global_zero:
            records = read_predictions(run_dir(trainer))
            if last == self._rows - 1:
                self.results.update(self._intervals(run_dir(trainer), records, datamodule.all_task_names[:T]))
            self.results.update(self._baselines(datamodule, records))
            self._write(run_dir(trainer), datamodule, acc)

    def _intervals(self, directory: Path, records: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
        """AA/BWT bootstrap intervals from the predictions of the last row and the diagonal."""
        if self.bootstrap_resamples == 0:
            return {}
        last = self._rows - 1
        # Rows ordered by sample id: after the last stage and, for BWT, right after the task's own training.
        stages = [[last] + ([j] if j < last and self._rows == len(tasks) else []) for j in range(len(tasks))]
        scores = [aligned_scores([scores_by_id(records, i, name) for i in rows]) for name, rows in zip(tasks, stages)]
        if any(s is None for s in scores):
            log.warning("no AA/BWT intervals: %s lacks an evaluation, or the sample ids differ between stages",
                        directory / PREDICTIONS_FILE)
            return {}
        own = [s[1] for s in scores if s.shape[0] == 2]
        intervals = bootstrap_cl_intervals([s[0] for s in scores], own or None, self.bootstrap_resamples, self.bootstrap_seed)
        return {"AA_ci95": intervals["AA"], "BWT_ci95": intervals["BWT"],
                "bootstrap": {"resamples": self.bootstrap_resamples, "seed": self.bootstrap_seed, "confidence": 0.95,
                              "method": "percentile; test samples resampled per task, same indices at every stage"}}

    def _baselines(self, datamodule, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Chance, majority and never-learned (see the class docstring); ``{}`` when the data module cannot say."""
        train_labels, label_names = getattr(datamodule, "train_labels", None), getattr(datamodule, "label_names", None)
        if not (callable(train_labels) and callable(label_names)):
            return {}
        tasks = list(datamodule.task_names)
        labels = [label_names(j) for j in range(len(tasks))]
        metrics = list(getattr(datamodule, "task_metric_names", None) or [])[: len(tasks)]
        # Each task's baseline is scored with the task's own metric (ROUGE-L for free-text answers).
        scorers = [partial(_score_one, name) for name in metrics] if len(metrics) == len(tasks) else None
        return run_baselines(records, tasks, datamodule.stages, [train_labels(j) for j in range(len(tasks))],
                             [len(names) if names else None for names in labels], score_functions=scorers,
                             num_resamples=self.bootstrap_resamples, seed=self.bootstrap_seed)

    def _write(self, directory: Path, datamodule, acc: torch.Tensor) -> None:
        T = len(datamodule.task_names)
        payload = self.results
        keys = ("tasks", "acc_matrix", "AA", "BWT", "forgetting", "FWT", "AA_ci95", "BWT_ci95", "bootstrap",
                "AA_chance", "AA_majority", "never_learned", "baselines", "eval_schedule", "metric", "task_metrics", "scoring",
                "retention")
        write_json_atomic(directory / "cl_metrics.json", {k: payload.get(k) for k in keys})
        header = "after," + ",".join(datamodule.task_names)
        lines = [header] + [
            datamodule.stage_name(i) + "," + ",".join("" if math.isnan(float(v)) else f"{float(v):.4f}" for v in acc[i, :T])
            for i in range(self._rows)
        ]
        write_text_atomic(directory / "acc_matrix.csv", "\n".join(lines) + "\n")
        details = {
            "zero_shot": {n: float(acc[self._rows, j]) for j, n in enumerate(datamodule.task_names)} if self.forward_transfer else None,
            "held_out": {n: float(acc[self._rows - 1, T + k]) for k, n in enumerate(datamodule.held_out_tasks)}
            if getattr(datamodule, "held_out_tasks", None) else {},
            "history": self.history,
            "completed_stages": payload.get("completed_stages"),
            "num_stages": self._rows,
            # samples counted per (row, task), over all ranks; the last row is the zero-shot baseline
            "evaluated_samples": self._evaluated[:, :T].long().tolist(),
        }
        write_json_atomic(directory / "cl_details.json", details)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.verbose and trainer.is_global_zero and self.results:
            print_summary(self.results, datamodule_stage_names=[trainer.datamodule.stage_name(i) for i in range(self._rows)], out_dir=run_dir(trainer))

    # ----- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.metric is None:
            return {}
        correct, total = self._global_counts()
        baseline_wanted = self.forward_transfer or bool(getattr(self, "_held_out", 0))
        return {"correct": correct, "total": total, "baseline_done": bool(total[-1].sum() > 0) or not baseline_wanted,
                "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict) if state_dict else None


def print_summary(results: dict[str, Any], datamodule_stage_names: list[str], out_dir: Optional[Path] = None) -> None:
    """Print the accuracy matrix and the headline metrics as a table (rich)."""
    from rich.console import Console
    from rich.table import Table

    from nlora_lightning.reporting.metric_names import matrix_name

    table = Table(title=f"{matrix_name(results)} matrix R[i][j] (%): rows = after training stage i, columns = task j")
    table.add_column("after")
    for name in results["tasks"]:
        table.add_column(name, justify="right")
    for name, row in zip(datamodule_stage_names, results["acc_matrix"]):
        table.add_row(name, *("" if v is None or math.isnan(v) else f"{100 * v:.1f}" for v in row))
    console = Console()
    console.print(table)

    def fmt(key: str) -> str:
        value = results.get(key)
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"

    def interval(key: str) -> str:
        bounds = results.get(key)
        return f" [{100 * bounds[0]:.2f}, {100 * bounds[1]:.2f}]" if bounds else ""

    console.print(f"AA = {fmt('AA')}{interval('AA_ci95')}   BWT = {fmt('BWT')}{interval('BWT_ci95')}   "
                  f"forgetting = {fmt('forgetting')}   FWT = {fmt('FWT')}")
    if results.get("AA_ci95"):
        console.print("(in brackets: 95 % bootstrap interval over test samples)", markup=False)
    if results.get("AA_majority") is not None or results.get("AA_chance") is not None:
        flagged = results.get("never_learned") or []
        console.print(f"trivial baselines: AA of always the majority answer = {fmt('AA_majority')}, of chance = "
                      f"{fmt('AA_chance')}; never learned (not above majority): {len(flagged)} of {len(results['tasks'])} "
                      f"task(s){': ' + ', '.join(flagged) if flagged else ''}", markup=False)
    if out_dir is not None:
        console.print(f"files: {out_dir}")


def _gather_across_ranks(predictions: dict[int, list[Any]]) -> dict[int, list[Any]]:
    """Every rank's predictions, merged per task (a collective under DDP: every rank calls it)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_world_size() == 1:
        return predictions
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, predictions)
    merged: dict[int, list[Any]] = {}
    for part in gathered:
        for task, records in part.items():
            merged.setdefault(task, []).extend(records)
    return merged


def _metric_names(datamodule) -> dict[str, Any]:
    """What the matrix entries are: ``metric`` (one name, or "mixed"), ``task_metrics`` per task, ``scoring``."""
    names = list(getattr(datamodule, "task_metric_names", None) or [])[: len(datamodule.task_names)]
    if not names:
        return {"metric": "exact_match"}
    metric = names[0] if len(set(names)) == 1 else "mixed"
    return {"metric": metric, "task_metrics": dict(zip(datamodule.task_names, names)),
            "scoring": "mean per-sample score; a sample with several references takes the best over them"}


def _retention(acc: torch.Tensor, datamodule, rows: int) -> Optional[dict[str, Any]]:
    """Held-out tasks on the base model (the baseline row) and after the last stage: see ``metrics.retention``."""
    held_out, T = list(getattr(datamodule, "held_out_tasks", None) or []), len(datamodule.task_names)
    base = {name: float(acc[rows, T + k]) for k, name in enumerate(held_out)}
    final = {name: float(acc[rows - 1, T + k]) for k, name in enumerate(held_out)}
    return retention_summary(base, final)


def _score_one(metric: str, prediction: str, reference: str) -> float:
    return score_prediction(metric, prediction, [reference])

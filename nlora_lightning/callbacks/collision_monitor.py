"""CollisionMonitor: parameter collision and orthogonality of the task updates, at every stage end."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from nlora_lightning.analysis import DEFAULT_TAU, PairwiseAnalysis, pairwise_analysis
from nlora_lightning.callbacks.forgetting_metrics import run_dir
from nlora_lightning.callbacks.protocol import AdapterAnalysisModule, TaskSequence
from nlora_lightning.errors import ConfigurationError
from nlora_lightning.io import write_text_atomic

__all__ = ["CollisionMonitor", "matrix_csv"]

log = logging.getLogger(__name__)


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def matrix_csv(names: Sequence[str], matrix: torch.Tensor) -> str:
    """A square table as CSV: header ``task,<names>``, one row per name."""
    return _csv([["task", *names]] + [[name, *(f"{float(v):.6f}" for v in row)] for name, row in zip(names, matrix)])


class CollisionMonitor(Callback):
    """Measures how much the tasks' LoRA updates collide and overlap, after every stage.

    At each stage end (the last validation epoch of a stage) and at the end of training, the
    updates ``Delta W_t = B_t A_t`` (scaled by ``alpha / r``) of every stage trained so far are
    compared pairwise (see :mod:`nlora_lightning.analysis.functional`). Rank 0 logs
    ``analysis/collision_mean``, ``analysis/overlap_mean`` (means over stage pairs i < j, once
    there are two stages) and ``analysis/nuclear_norm_mean``, and writes into the run's log dir:

    - ``collision.csv``: stage x stage collision rates, mean over layers (diagonal: share of
      non-zero entries of the stage's own update);
    - ``orthogonality.csv``: stage x stage normalised overlaps ``||dW_i^T dW_j||_F / (||dW_i||_F ||dW_j||_F)``;
    - ``adapter_stats.csv``: one row per stage and layer: ``task, layer, sparsity, nuclear_norm, fro_norm``.

    A module without adapters (full fine-tuning) has nothing to analyse: one info line is logged.

    Args:
        tau: An entry counts as non-zero when ``|Delta W[a, b]| > tau * max |Delta W|`` (per
            update and layer; default :data:`~nlora_lightning.analysis.DEFAULT_TAU`, 1 %).

    Raises:
        ValueError: If ``tau`` is not in (0, 1).
        TypeError: At setup, if the module or data module lacks the protocol (``callbacks/protocol.py``).

    Example:
        >>> trainer = pl.Trainer(callbacks=[CollisionMonitor(tau=0.01)])  # doctest: +SKIP
    """

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        super().__init__()
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0.0 < tau < 1.0:
            raise ValueError(f"CollisionMonitor tau is a fraction of each update's largest magnitude and must lie "
                             f"in (0, 1), got {tau!r}")
        self.tau = float(tau)
        self.results: dict[str, Any] = {}  # headline figures of the last analysis
        self._disabled = False
        self._analysed_at: Optional[tuple[int, tuple[int, ...]]] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(tau=self.tau)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, AdapterAnalysisModule):
            raise TypeError("CollisionMonitor needs an AdapterAnalysisModule (trained_stages, task_update_factors); "
                            f"got {type(pl_module).__name__}")
        if not isinstance(trainer.datamodule, TaskSequence):
            raise TypeError(f"CollisionMonitor needs a TaskSequence data module; got {type(trainer.datamodule).__name__}")

    # ----- when --------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if trainer.datamodule.is_stage_end(trainer.current_epoch):
            self._analyse(trainer, pl_module, log_metrics=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Covers runs without validation and runs stopped mid-stage; Lightning forbids logging here.
        self._analyse(trainer, pl_module, log_metrics=False)

    # ----- what --------------------------------------------------------------------------------
    def _collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Optional[dict[int, dict]]:
        stages = pl_module.trained_stages()
        try:
            if not stages:  # only a module without adapters answers with ConfigurationError
                pl_module.task_update_factors(trainer.datamodule.stage_for_epoch(trainer.current_epoch))
            return {stage: pl_module.task_update_factors(stage) for stage in stages}
        except ConfigurationError as error:
            log.info("CollisionMonitor: nothing to analyse (%s)", error)
            self._disabled = True
        except KeyError:  # no stage trained yet
            pass
        return None

    def _analyse(self, trainer: pl.Trainer, pl_module: pl.LightningModule, log_metrics: bool) -> None:
        # The factors are identical on every rank: rank 0 does the work alone.
        if self._disabled or not trainer.is_global_zero:
            return
        factors = self._collect(trainer, pl_module)
        if not factors:
            return
        position = (trainer.global_step, tuple(sorted(factors)))
        if position == self._analysed_at:  # e.g. on_train_end right after the last stage-end validation
            return
        result = pairwise_analysis(factors, self.tau, device=pl_module.device)
        self._analysed_at = position
        self.results = {
            "stages": result.tasks,
            "collision_mean": result.collision_mean,
            "overlap_mean": result.overlap_mean,
            "nuclear_norm_mean": result.nuclear_norm_mean,
        }
        if log_metrics:
            for key in ("collision_mean", "overlap_mean", "nuclear_norm_mean"):
                if math.isfinite(self.results[key]):
                    pl_module.log(f"analysis/{key}", self.results[key], rank_zero_only=True)
        names = [trainer.datamodule.stage_name(stage) for stage in result.tasks]
        self._write(run_dir(trainer), names, result)

    @staticmethod
    def _write(directory: Path, names: list[str], result: PairwiseAnalysis) -> None:
        write_text_atomic(directory / "collision.csv", matrix_csv(names, result.collision))
        write_text_atomic(directory / "orthogonality.csv", matrix_csv(names, result.overlap))
        rows: list[list[Any]] = [["task", "layer", "sparsity", "nuclear_norm", "fro_norm"]]
        for t, name in enumerate(names):
            for l, layer in enumerate(result.layers):
                rows.append([name, layer, f"{float(result.sparsity[t, l]):.6f}",
                             f"{float(result.nuclear_norm[t, l]):.6g}", f"{float(result.fro_norm[t, l]):.6g}"])
        write_text_atomic(directory / "adapter_stats.csv", _csv(rows))

    # ----- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # The analysis is recomputed from the module's adapter store; only the last figures are kept.
        return {"results": dict(self.results)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.results = dict(state_dict.get("results", {}))

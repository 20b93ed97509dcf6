"""The run directory's layout: every file name a run owns, in one place, and where the directory is.

A run directory (``runs/<name>``, the logger's log dir) holds what ``nlora fit`` writes and what the
commands run on it afterwards add (``nlora report``, ``nlora test``). :data:`RUN_FILES` lists every
one of those names; ``--overwrite`` removes exactly these (anything else in the folder is the
user's), and :data:`LOCK_FILE` is the lock of the job writing into it (see :mod:`nlora_lightning.run_lock`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "CHECKPOINTS", "CONFIG", "HPARAMS", "METRICS_CSV", "RUN_INFO", "CL_METRICS", "CL_DETAILS", "ACC_MATRIX_CSV",
    "COLLISION_CSV", "ORTHOGONALITY_CSV", "ADAPTER_STATS_CSV", "REPORT", "PLOTS", "PREDICTIONS_DIR",
    "PREDICTIONS_FILE", "EVALUATIONS_DIR", "LOCK_FILE", "RUN_FILES", "run_dir", "run_dir_of_checkpoint",
]

CHECKPOINTS = "checkpoints"  # last.ckpt (and any top-k checkpoint)
CONFIG = "config.yaml"  # the composed command-line config (LightningCLI)
HPARAMS = "hparams.yaml"  # the logger's copy of the hyperparameters
METRICS_CSV = "metrics.csv"  # every logged value per step
RUN_INFO = "run_info.json"  # method, model, tasks, settings, status (running/finished/failed/interrupted)
CL_METRICS = "cl_metrics.json"  # accuracy matrix, AA, BWT, forgetting, FWT, intervals
CL_DETAILS = "cl_details.json"  # zero-shot baseline, held-out tasks, metrics after each stage
ACC_MATRIX_CSV = "acc_matrix.csv"
COLLISION_CSV = "collision.csv"
ORTHOGONALITY_CSV = "orthogonality.csv"
ADAPTER_STATS_CSV = "adapter_stats.csv"
REPORT = "report.md"
PLOTS = ("acc_matrix.png", "collision.png", "orthogonality.png", "sparsity.png")
PREDICTIONS_DIR = "predictions"  # older runs: one JSONL file per (stage, task)
PREDICTIONS_FILE = "predictions.jsonl"  # one file per run, a line per (stage, task, sample)
EVALUATIONS_DIR = "evaluations"  # `nlora test` / `nlora validate` scores of the run's checkpoints
LOCK_FILE = ".nlora.lock"  # held by the job writing into the directory; never part of a finished run

# Everything a run (and the commands run on it) writes into its directory: --overwrite removes these.
RUN_FILES: tuple[str, ...] = (
    CHECKPOINTS, CONFIG, HPARAMS, METRICS_CSV, RUN_INFO, CL_METRICS, CL_DETAILS, ACC_MATRIX_CSV, COLLISION_CSV,
    ORTHOGONALITY_CSV, ADAPTER_STATS_CSV, REPORT, *PLOTS, PREDICTIONS_DIR, PREDICTIONS_FILE, EVALUATIONS_DIR,
)


def run_dir(trainer: "pl.Trainer") -> Path:
    """The run's log dir, where every file of a run goes: ``trainer.log_dir`` without its broadcast.

    ``Trainer.log_dir`` is a collective call under DDP; callers that only write on rank 0 must not
    make it, or the other ranks wait forever.
    """
    logger = trainer.logger
    if logger is not None:
        directory = getattr(logger, "log_dir", None) or logger.save_dir
        if directory:
            return Path(directory)
    return Path(trainer.default_root_dir)


def run_dir_of_checkpoint(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to: ``RUN`` for ``RUN/checkpoints/x.ckpt``, else its folder."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint.parent

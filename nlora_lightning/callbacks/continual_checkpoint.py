"""ContinualCheckpoint: ``last.ckpt`` after every task-end evaluation and epoch, never between a task's last batch and its evaluation."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["ContinualCheckpoint"]


class ContinualCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for a task sequence trained in one ``fit``.

    Three differences from ``ModelCheckpoint``:

    * With ``save_last``, ``last.ckpt`` is written at the end of every training epoch, after that
      epoch's evaluation (the task-end evaluation included), whatever ``save_top_k`` is.
      ``ModelCheckpoint`` writes ``last`` at epoch end only when a top-k checkpoint was saved at the
      same step, so ``save_top_k=0`` would write nothing until the whole sequence ends.
    * A step- or time-based save (``every_n_train_steps``, ``train_time_interval``) is skipped on
      the last batch of an epoch. That checkpoint would be written before the epoch-end evaluation,
      and Lightning resumes it as a finished epoch: the evaluation at the end of a task would never
      run, leaving a hole in the accuracy matrix. The epoch-end save covers that step instead.
    * ``train_time_interval`` counts from the last checkpoint written (any kind) and may be combined
      with ``every_n_train_steps`` (Lightning refuses the combination), so a config composed on top
      of a model config can add a step-based save.
    * ``last.ckpt`` is written when SIGTERM stops the fit between two training steps (Lightning stops
      at the end of the step), unless that step ended an epoch: the epoch-end save covers it.
    * ``last.ckpt`` is written again when training ends, after the last task was finished
      (frozen into the adapter store), so the final checkpoint holds every task's adapter.

    Everything else is ``ModelCheckpoint``'s, arguments included (``save_on_train_epoch_end``
    defaults to True here, and must stay True for the epoch-end save to follow the evaluation).

    Example:
        >>> from datetime import timedelta
        >>> ContinualCheckpoint(save_last=True, save_top_k=0, train_time_interval=timedelta(minutes=30))  # doctest: +ELLIPSIS
        ContinualCheckpoint...
    """

    def __init__(
        self, *args: Any, save_on_train_epoch_end: bool = True, train_time_interval: Optional[timedelta] = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)
        if train_time_interval is not None and train_time_interval.total_seconds() < 0:
            raise ValueError(f"train_time_interval must not be negative, got {train_time_interval}")
        self.save_interval = train_time_interval  # Lightning's own time trigger excludes step-based saves
        self._last_save_time: Optional[float] = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_save_time = time.monotonic()

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._last_save_time = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.save_interval is None:
            return
        elapsed = time.monotonic() - (self._last_save_time or time.monotonic())
        due = trainer.strategy.broadcast(elapsed >= self.save_interval.total_seconds())  # rank 0's clock decides
        if due and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)  # also true when super() just saved this step
            and self._should_save_on_train_epoch_end(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks' on_train_end runs checkpoint callbacks last: the last task has been finished by now.
        if self.save_last and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, SIGTERMException) and self.save_last and self._can_save_at_stop(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _can_save_at_stop(self, trainer: pl.Trainer) -> bool:
        """Lightning stopped between two training steps, which a resume restarts from exactly."""
        return (
            trainer.training and not trainer.sanity_checking and not trainer.fast_dev_run
            and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch  # before the epoch-end evaluation
            and not self._should_skip_saving_checkpoint(trainer)  # not already saved at this step
        )

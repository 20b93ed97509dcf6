"""ContinualCheckpoint: a ModelCheckpoint whose step-based saves never lose a task-end evaluation."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["ContinualCheckpoint"]


class ContinualCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that skips a step-based save on the last batch of an epoch.

    That checkpoint would be written before the epoch-end evaluation, and Lightning resumes such a
    checkpoint as a finished epoch: the evaluation at the end of a task would never run, leaving a
    hole in the accuracy matrix. The epoch-end save (``save_on_train_epoch_end=True``, the default
    here) comes after the evaluation and covers that step instead. Everything else is
    ``ModelCheckpoint``'s, arguments included.

    Example:
        >>> ContinualCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=50)  # doctest: +ELLIPSIS
        ContinualCheckpoint...
    """

    def __init__(self, *args: Any, save_on_train_epoch_end: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

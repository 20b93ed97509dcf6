"""FreezePreviousAdapters: the task-boundary protocol (see ``callbacks/protocol.py``)."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from nlora_lightning.callbacks.protocol import ContinualModule, TaskSequence

__all__ = ["FreezePreviousAdapters"]

log = logging.getLogger(__name__)


class FreezePreviousAdapters(Callback):
    """At each task boundary: freeze the finished adapter, add and activate the next, fresh optimizer.

    Works with any LightningModule implementing :class:`ContinualModule`, trained on a data module
    implementing :class:`TaskSequence`. The boundary is found from the epoch at
    ``on_train_epoch_start`` (so a resumed run finds it again), and the last stage is finished at
    ``on_train_end``. Stateless: the module's checkpoint carries the adapters and the position.

    Args:
        verbose: Log each boundary.

    Raises:
        TypeError: At setup, if the module or data module lacks the protocol.

    Example:
        >>> trainer = pl.Trainer(callbacks=[FreezePreviousAdapters()])  # doctest: +SKIP
    """

    def __init__(self, verbose: bool = True) -> None:
        super().__init__()
        self.verbose = verbose

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, ContinualModule):
            raise TypeError(f"FreezePreviousAdapters needs a ContinualModule (start_task, finish_task, current_task); got {type(pl_module).__name__}")
        if not isinstance(trainer.datamodule, TaskSequence):
            raise TypeError(f"FreezePreviousAdapters needs a TaskSequence data module; got {type(trainer.datamodule).__name__}")

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The evaluation loaders' lengths depend on what is scheduled; the sanity check (zero-shot
        # baseline or nothing) schedules differently from the end of the first task, but Lightning
        # would reuse the sanity check's loaders at epoch 0. Make it ask again.
        val_loop = trainer.fit_loop.epoch_loop.val_loop
        if hasattr(val_loop, "_last_val_dl_reload_epoch"):
            val_loop._last_val_dl_reload_epoch = float("-inf")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stage = trainer.datamodule.stage_for_epoch(trainer.current_epoch)
        current = pl_module.current_task
        if stage == current:
            return
        if stage < current:
            raise RuntimeError(f"epoch {trainer.current_epoch} maps to stage {stage}, but the module is at stage {current}")
        pl_module.finish_task(current)
        pl_module.start_task(stage)
        trainer.strategy.setup_optimizers(trainer)
        if self.verbose and trainer.is_global_zero:
            log.info("task boundary: finished %s, training %s", trainer.datamodule.stage_name(current), trainer.datamodule.stage_name(stage))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:  # the sequence is complete
            pl_module.finish_task(pl_module.current_task)

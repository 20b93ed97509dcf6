"""FreezePreviousAdapters: the task-boundary protocol (see ``callbacks/protocol.py``)."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden

from nlora_lightning.callbacks.protocol import ContinualModule, TaskSequence
from nlora_lightning.callbacks.sequence_settings import apply_sequence_settings
from nlora_lightning.errors import ConfigurationError

__all__ = ["FreezePreviousAdapters"]

log = logging.getLogger(__name__)


class FreezePreviousAdapters(Callback):
    """At each task boundary: freeze the finished adapter, add and activate the next, fresh optimizer.

    Works with any LightningModule implementing :class:`ContinualModule`, trained on a data module
    implementing :class:`TaskSequence` (see ``docs/reuse.md``). The boundary is found from the epoch
    at ``on_train_epoch_start`` (so a resumed run finds it again), and the last stage is finished at
    ``on_train_end``. Stateless: the module's checkpoint carries the adapters and the position.

    Stage 0: a module still at ``current_task == -1`` when the fit is set up is started here, in
    ``setup`` (before ``configure_model`` and ``configure_optimizers``), unless it overrides
    ``configure_model``: its parameters may not exist yet, so it must call ``start_task(0)`` there
    itself (``ContinualLightningModule`` does). A module still at -1 at ``on_fit_start`` is an error.

    At ``on_fit_start`` the Trainer is made to run the sequence (``sequence_settings``): an unset
    ``max_epochs`` becomes the sequence's epochs and the training loader is reloaded every epoch;
    a ``max_epochs`` that does not fit stops the fit.

    Args:
        verbose: Log each boundary.

    Raises:
        TypeError: At setup, if the module or data module lacks the protocol.
        ConfigurationError: At fit start, for a ``max_epochs`` that does not fit the sequence, or a
            module that did not start stage 0.

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
        if pl_module.current_task < 0 and not is_overridden("configure_model", pl_module):
            pl_module.start_task(trainer.datamodule.stage_for_epoch(0))  # a resume restores its own stage later

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.current_task < 0:
            raise ConfigurationError(
                f"FreezePreviousAdapters: {type(pl_module).__name__} is still at current_task = -1 when the fit starts; "
                "a module that overrides configure_model must call self.start_task(0) at its end"
            )
        apply_sequence_settings(trainer, "FreezePreviousAdapters")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # A module that overrides configure_model and never starts stage 0 usually fails first in its own
        # configure_optimizers ("optimizer got an empty parameter list"): name the cause next to that error.
        if getattr(pl_module, "current_task", 0) < 0 and trainer.global_step == 0:
            log.error("FreezePreviousAdapters: %s was still at current_task = -1 (no stage started); a module that "
                      "overrides configure_model must call self.start_task(0) at its end", type(pl_module).__name__)

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
        if stage < current or current < 0:
            raise RuntimeError(f"epoch {trainer.current_epoch} maps to stage {stage}, but the module is at stage {current}")
        pl_module.finish_task(current)
        pl_module.start_task(stage)
        trainer.strategy.setup_optimizers(trainer)
        if self.verbose and trainer.is_global_zero:
            log.info("task boundary: finished %s, training %s", trainer.datamodule.stage_name(current), trainer.datamodule.stage_name(stage))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        complete = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs
        if complete and pl_module.current_task >= 0:
            pl_module.finish_task(pl_module.current_task)

"""The Trainer settings a task sequence needs, checked (and set where unset) when a fit starts.

A whole sequence is one ``fit``: epochs map to stages through the data module, so the Trainer must
run exactly the sequence's epochs and fetch the training loader again every epoch. Without the
reload, Lightning keeps the loader of epoch 0 and every stage trains on the first task's data, with
no error. ``ContinualLightningModule.setup`` sets both; a foreign module relies on the callbacks,
which call :func:`apply_sequence_settings` at ``on_fit_start`` (after every ``setup`` hook).
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_debug, rank_zero_info

from nlora_lightning.callbacks.protocol import TaskSequence
from nlora_lightning.errors import ConfigurationError

__all__ = ["apply_sequence_settings", "sequence_epochs"]

# Lightning's stand-ins for "max_epochs not given": None before a fit, 1000 (or -1 with max_steps) during it.
_UNSET_MAX_EPOCHS = (None, -1, 1000)
_SEARCH_LIMIT = 1_000_000


def sequence_epochs(datamodule: TaskSequence) -> int:
    """Epochs of the whole sequence: one past the last stage's last epoch (from the protocol alone).

    Raises:
        ConfigurationError: If the data module never reports the end of its last stage.
    """
    last = datamodule.num_stages - 1
    epoch = 0
    while epoch < _SEARCH_LIMIT:
        stage = datamodule.stage_for_epoch(epoch)
        if stage == last and datamodule.is_stage_end(epoch):
            return epoch + 1
        epoch += 1
    raise ConfigurationError(
        f"{type(datamodule).__name__}: no epoch below {_SEARCH_LIMIT} is the end of the last stage ({last}); "
        "stage_for_epoch / is_stage_end must reach it"
    )


def apply_sequence_settings(trainer: pl.Trainer, caller: str) -> None:
    """Make the Trainer run the sequence: ``max_epochs`` = its epochs, the train loader reloaded every epoch.

    An unset ``max_epochs`` (``None``, ``-1``, or Lightning's default 1000) and any
    ``reload_dataloaders_every_n_epochs`` other than 1 are set. Only overriding a value the user
    chose (a reload interval other than Lightning's default 0) logs an info line; filling in
    defaults logs at debug level, so a plain run's console stays quiet. Idempotent.

    Raises:
        ConfigurationError: If ``max_epochs`` was given and differs from the sequence's epochs (fewer
            would leave stages untrained, more would keep training the last task).
    """
    datamodule = trainer.datamodule
    total = sequence_epochs(datamodule)
    fit_loop = trainer.fit_loop
    if fit_loop.max_epochs != total:
        if fit_loop.max_epochs not in _UNSET_MAX_EPOCHS:
            raise ConfigurationError(
                f"{caller}: Trainer(max_epochs={fit_loop.max_epochs}) does not fit the task sequence of "
                f"{datamodule.num_stages} stages ({total} epochs); set max_epochs={total} or leave it unset"
            )
        rank_zero_debug(f"{caller}: max_epochs set to {total}, the task sequence's epochs ({datamodule.num_stages} stages)")
        fit_loop.max_epochs = total
    if trainer.reload_dataloaders_every_n_epochs != 1:
        report = rank_zero_info if trainer.reload_dataloaders_every_n_epochs != 0 else rank_zero_debug
        report(f"{caller}: reload_dataloaders_every_n_epochs set to 1 (was {trainer.reload_dataloaders_every_n_epochs}): "
               "each stage trains on its own data")
        trainer.reload_dataloaders_every_n_epochs = 1

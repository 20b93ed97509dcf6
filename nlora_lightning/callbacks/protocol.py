"""The small protocol the callbacks need from a LightningModule and its data module.

Any LightningModule can use :class:`FreezePreviousAdapters`, :class:`ForgettingMetrics` and
:class:`CollisionMonitor` by implementing :class:`ContinualModule` (and, for ``CollisionMonitor``,
:class:`AdapterAnalysisModule`) and training on a data module that implements all of
:class:`TaskSequence` (``TaskSequenceDataModule`` does). ``docs/reuse.md`` has a complete, tested
example and a table of what each callback uses.

Stage 0: ``current_task`` is -1 until a stage starts. ``FreezePreviousAdapters.setup`` (before
``configure_model`` and ``configure_optimizers``) calls ``start_task(0)`` on a module still at -1,
unless the module overrides ``configure_model``: such a module must call ``start_task(0)`` at the
end of its ``configure_model`` (``ContinualLightningModule`` does). ``finish_task`` is never
called with -1.

The task-boundary protocol, driven by ``FreezePreviousAdapters`` at ``on_train_epoch_start``:

    1. ``stage = datamodule.stage_for_epoch(trainer.current_epoch)``; nothing to do unless it
       differs from ``module.current_task``;
    2. ``module.finish_task(module.current_task)``: store and freeze the finished adapter;
    3. ``module.start_task(stage)``: make the new stage's parameters (and only those) trainable;
    4. ``trainer.strategy.setup_optimizers(trainer)``: a fresh optimizer and scheduler over them
       (the module's ``configure_optimizers`` must take the parameters that require gradients).

The last stage is finished at ``on_train_end``. At ``on_fit_start``, ``FreezePreviousAdapters``
and ``ForgettingMetrics`` make the Trainer run the sequence (``sequence_settings``): an unset
``max_epochs`` becomes the sequence's epochs, a different one stops the fit, and the training
loader is reloaded every epoch (``train_dataloader`` must hand out the current stage's data).

Resuming: the module's checkpoint must restore ``current_task`` and its finished stages (Lightning
restores the module before it configures the optimizers).

Evaluation: ``validation_step`` returns an :data:`EvalOutput` per batch, with ``task`` indexing
``all_task_names``; ``ForgettingMetrics`` reads it in ``on_validation_batch_end``.
"""

from __future__ import annotations

from typing import Protocol, TypedDict, runtime_checkable

from torch import Tensor

__all__ = ["ContinualModule", "AdapterAnalysisModule", "TaskSequence", "EvalOutput"]


class EvalOutput(TypedDict):
    """What ``validation_step`` returns for one batch of one task."""

    task: int  # column: index into TaskSequence.all_task_names
    correct: int
    total: int


@runtime_checkable
class ContinualModule(Protocol):
    current_task: int  # the stage being trained (-1 before the first)

    def start_task(self, stage: int) -> None:
        """Make stage ``stage``'s parameters, and only those, trainable."""

    def finish_task(self, stage: int) -> None:
        """Store and freeze what stage ``stage`` trained; it stays in the forward pass (never called with -1)."""


@runtime_checkable
class AdapterAnalysisModule(Protocol):
    def task_update_factors(self, stage: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Per adapted layer, factors ``(A, B_scaled)`` of the stage's update ``Delta W = B_scaled @ A``.

        Raises ``KeyError`` for a stage without an update (and ``ConfigurationError`` for a module
        that has no low-rank updates at all: ``CollisionMonitor`` then analyses nothing).
        """

    def trained_stages(self) -> list[int]:
        """Stages whose update is available (finished, or the one in progress)."""


@runtime_checkable
class TaskSequence(Protocol):
    task_names: list[str]
    zero_shot_baseline: bool  # evaluate every task before training (for FWT)
    evaluate_next_task: bool  # at each stage end, also evaluate the next stage's tasks (for FWT)

    @property
    def all_task_names(self) -> list[str]:
        """Sequence tasks followed by held-out tasks (the evaluation columns)."""

    @property
    def stages(self) -> list[list[int]]:
        """Task indices trained in each stage."""

    @property
    def num_stages(self) -> int: ...

    def stage_for_epoch(self, epoch: int) -> int: ...

    def is_stage_end(self, epoch: int) -> bool: ...

    def stage_name(self, stage: int) -> str: ...

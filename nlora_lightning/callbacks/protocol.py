"""The small protocol the callbacks need from a LightningModule and its data module.

Any LightningModule can use :class:`FreezePreviousAdapters`, :class:`ForgettingMetrics` and
:class:`CollisionMonitor` by implementing :class:`ContinualModule` and training on a data module
that implements :class:`TaskSequence` (``TaskSequenceDataModule`` does).

The task-boundary protocol, driven by ``FreezePreviousAdapters`` at ``on_train_epoch_start``:

    1. ``stage = datamodule.stage_for_epoch(trainer.current_epoch)``; nothing to do unless it
       differs from ``module.current_task``;
    2. ``module.finish_task(module.current_task)``: store and freeze the finished adapter;
    3. ``module.start_task(stage)``: make the new stage's parameters (and only those) trainable;
    4. ``trainer.strategy.setup_optimizers(trainer)``: a fresh optimizer and scheduler over them.

Evaluation: ``validation_step`` returns an :data:`EvalOutput` per batch; ``ForgettingMetrics``
reads it in ``on_validation_batch_end``.
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
        """Store and freeze what stage ``stage`` trained; it stays in the forward pass."""


@runtime_checkable
class AdapterAnalysisModule(Protocol):
    def task_update_factors(self, stage: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Per adapted layer, factors ``(A, B_scaled)`` of the stage's update ``Delta W = B_scaled @ A``."""

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

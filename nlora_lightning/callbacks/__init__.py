"""Callbacks for continual learning, reusable by any LightningModule that follows ``protocol``."""

from nlora_lightning.callbacks.collision_monitor import CollisionMonitor
from nlora_lightning.callbacks.continual_checkpoint import ContinualCheckpoint
from nlora_lightning.callbacks.cost_monitor import CostMonitor
from nlora_lightning.callbacks.forgetting_metrics import ForgettingMetrics
from nlora_lightning.callbacks.freeze_previous_adapters import FreezePreviousAdapters
from nlora_lightning.callbacks.protocol import AdapterAnalysisModule, ContinualModule, EvalOutput, TaskSequence
from nlora_lightning.callbacks.run_report import RunReport

__all__ = [
    "AdapterAnalysisModule",
    "CollisionMonitor",
    "ContinualCheckpoint",
    "ContinualModule",
    "CostMonitor",
    "EvalOutput",
    "ForgettingMetrics",
    "FreezePreviousAdapters",
    "RunReport",
    "TaskSequence",
]

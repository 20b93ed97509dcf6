"""Callbacks for continual learning, reusable by any LightningModule that follows ``protocol``."""

from nlora_lightning.callbacks.forgetting_metrics import ForgettingMetrics
from nlora_lightning.callbacks.freeze_previous_adapters import FreezePreviousAdapters
from nlora_lightning.callbacks.protocol import AdapterAnalysisModule, ContinualModule, EvalOutput, TaskSequence

__all__ = ["AdapterAnalysisModule", "ContinualModule", "EvalOutput", "ForgettingMetrics", "FreezePreviousAdapters", "TaskSequence"]

"""nlora_lightning: N-LoRA continual fine-tuning of LLMs as PyTorch Lightning modules."""

from nlora_lightning.data.datamodule import ReplayConfig, TaskSequenceDataModule
from nlora_lightning.lora import LoRAConfig
from nlora_lightning.models.loading import QuantizationConfig
from nlora_lightning.module import ContinualLightningModule, EvaluationConfig
from nlora_lightning.regularizers import RegularizerConfig

__version__ = "0.1.0"

__all__ = [
    "ContinualLightningModule",
    "EvaluationConfig",
    "LoRAConfig",
    "QuantizationConfig",
    "RegularizerConfig",
    "ReplayConfig",
    "TaskSequenceDataModule",
    "__version__",
]

"""nlora_lightning: N-LoRA continual fine-tuning of LLMs as PyTorch Lightning modules.

The top-level names are imported on first use (PEP 562), so ``import nlora_lightning.callbacks``
or the pure math (``regularizers``, ``metrics``, ``analysis``) does not pay for transformers and
the model-loading code; ``from nlora_lightning import ContinualLightningModule`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "ContinualLightningModule": "nlora_lightning.module",
    "EvaluationConfig": "nlora_lightning.evaluation",
    "LoRAConfig": "nlora_lightning.lora",
    "Method": "nlora_lightning.methods",
    "MethodConfig": "nlora_lightning.methods",
    "QuantizationConfig": "nlora_lightning.models.loading",
    "register_method": "nlora_lightning.methods",
    "RegularizerConfig": "nlora_lightning.regularizers",
    "ReplayConfig": "nlora_lightning.data.datamodule",
    "TaskSequenceDataModule": "nlora_lightning.data.datamodule",
}

__all__ = [*sorted(_LAZY), "__version__"]

if TYPE_CHECKING:  # static analysers and IDEs see the names as ordinary imports
    from nlora_lightning.data.datamodule import ReplayConfig, TaskSequenceDataModule
    from nlora_lightning.evaluation import EvaluationConfig
    from nlora_lightning.lora import LoRAConfig
    from nlora_lightning.methods import Method, MethodConfig, register_method
    from nlora_lightning.models.loading import QuantizationConfig
    from nlora_lightning.module import ContinualLightningModule
    from nlora_lightning.regularizers import RegularizerConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nlora_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

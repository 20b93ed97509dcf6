"""Per-task LoRA: ``config`` (shape), ``layer`` (one adapted linear), ``model`` (injection, store, consolidation)."""

from nlora_lightning.lora.config import LoRAConfig, default_target_modules
from nlora_lightning.lora.layer import ContinualLoRALinear
from nlora_lightning.lora.model import AdapterSnapshot, ContinualLoRAModel, LayerFactors, inject_lora

__all__ = [
    "AdapterSnapshot",
    "ContinualLoRALinear",
    "ContinualLoRAModel",
    "LayerFactors",
    "LoRAConfig",
    "default_target_modules",
    "inject_lora",
]

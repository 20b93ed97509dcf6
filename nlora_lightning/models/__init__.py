"""Backbone loading, the byte tokenizer, and the forward passes (loss, generation, ranking)."""

from nlora_lightning.models.loading import Backbone, QuantizationConfig, load_backbone, load_tokenizer, resolve_model_path
from nlora_lightning.models.tokenizer import byte_tokenizer

__all__ = ["Backbone", "QuantizationConfig", "byte_tokenizer", "load_backbone", "load_tokenizer", "resolve_model_path"]

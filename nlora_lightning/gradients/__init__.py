"""Gradient transforms: pure tensor math (``functional``), one file per method, a registry (``base``)."""

from nlora_lightning.gradients import migu as _migu  # noqa: F401  (registers "migu")
from nlora_lightning.gradients.base import (
    GRADIENT_TRANSFORMS,
    GradientTransform,
    build_gradient_transforms,
    get_gradient_transform,
    register_gradient_transform,
)
from nlora_lightning.gradients.config import GradientTransformConfig
from nlora_lightning.gradients.functional import l1_normalized, mask_rows, top_magnitude_mask

__all__ = [
    "GRADIENT_TRANSFORMS",
    "GradientTransform",
    "GradientTransformConfig",
    "build_gradient_transforms",
    "get_gradient_transform",
    "l1_normalized",
    "mask_rows",
    "register_gradient_transform",
    "top_magnitude_mask",
]

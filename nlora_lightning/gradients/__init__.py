"""Gradient transforms: pure tensor math (``functional``), one file per method, a registry (``base``)."""

from nlora_lightning.gradients import gorp as _gorp  # noqa: F401  (registers "gorp")
from nlora_lightning.gradients import migu as _migu  # noqa: F401  (registers "migu")
from nlora_lightning.gradients.base import (
    GRADIENT_TRANSFORMS,
    GradientTransform,
    build_gradient_transforms,
    get_gradient_transform,
    register_gradient_transform,
)
from nlora_lightning.gradients.config import GradientTransformConfig
from nlora_lightning.gradients.functional import (
    energy_basis,
    expand_basis,
    l1_normalized,
    mask_rows,
    project_out,
    top_magnitude_mask,
)

__all__ = [
    "GRADIENT_TRANSFORMS",
    "GradientTransform",
    "GradientTransformConfig",
    "build_gradient_transforms",
    "energy_basis",
    "expand_basis",
    "get_gradient_transform",
    "l1_normalized",
    "mask_rows",
    "project_out",
    "register_gradient_transform",
    "top_magnitude_mask",
]

"""Gradient rewrites' math as pure tensor functions (``functional``); MIGU and GORP live in ``nlora_lightning.methods``.

``GradientTransformConfig`` is the deprecated entry type of ``model.gradient_transforms`` (one
release; use ``model.methods``).
"""

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
    "GradientTransformConfig",
    "energy_basis",
    "expand_basis",
    "l1_normalized",
    "mask_rows",
    "project_out",
    "top_magnitude_mask",
]

"""Deprecated (one release): ``model.gradient_transforms`` entries; use ``model.methods`` entries without a weight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["GradientTransformConfig"]


@dataclass
class GradientTransformConfig:
    """One gradient transform: ``grads <- transform(grads)`` after backward, before clipping and the step.

    Args:
        name: A registered method (``migu``, ``gorp``; see ``nlora_lightning.methods``).
        options: Keyword arguments of the transform's constructor (e.g. ``{"top_ratio": 0.3}``).

    Raises:
        ValueError: If the name is empty or the options are not a mapping.

    Example:
        >>> GradientTransformConfig("migu", {"top_ratio": 0.3}).options["top_ratio"]
        0.3
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a gradient transform needs a name, got {self.name!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"gradient transform {self.name!r}: options must be a mapping, got {type(self.options).__name__}")

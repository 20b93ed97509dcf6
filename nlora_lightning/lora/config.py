"""Configuration of the per-task LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["LoRAConfig", "default_target_modules"]

# Defaults of the paper and the released code: attention query and value projections.
_DEFAULT_TARGETS = {
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "umt5": ["q", "v"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
}


def default_target_modules(model_type: str) -> list[str]:
    """Target modules used when ``LoRAConfig.target_modules`` is not given."""
    return list(_DEFAULT_TARGETS.get(model_type, ["q_proj", "v_proj"]))


@dataclass
class LoRAConfig:
    """Shape of every task's LoRA pair.

    Args:
        r: Rank of each task's update ``Delta W_t = B_t A_t`` (paper: 8).
        alpha: Scale numerator; the update is applied as ``(alpha / r) * B_t A_t`` (paper: 32).
        dropout: Dropout on the input of the trainable adapter (paper: 0.1). Frozen adapters run
            without dropout, so their consolidated, merged and per-task forms are the same function.
        target_modules: Names (last dotted component, or a full dotted suffix) of the linear layers
            to adapt. ``None`` picks the paper's choice for the model family: ``q``, ``v`` for T5
            and ``q_proj``, ``v_proj`` for LLaMA-family models.

    Raises:
        ValueError: If ``r`` is not positive, ``alpha`` is not positive, or ``dropout`` is outside [0, 1).
    """

    r: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    target_modules: Optional[list[str]] = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got r={self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive, got alpha={self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must lie in [0, 1), got dropout={self.dropout!r}")
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("LoRA target_modules is an empty list; give at least one module name or null")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

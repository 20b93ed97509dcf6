"""Loss terms beyond factor regularizers: batch-level (LwF) and stateful with a task-end hook (EWC)."""

from nlora_lightning.losses.base import LOSS_TERMS, LossTerm, LossTerms, check_adapter_modes, register_loss_term
from nlora_lightning.losses.ewc import EWC, EWCLoRA
from nlora_lightning.losses.lwf import LwF

__all__ = ["EWC", "EWCLoRA", "LOSS_TERMS", "LossTerm", "LossTerms", "LwF", "check_adapter_modes", "register_loss_term"]

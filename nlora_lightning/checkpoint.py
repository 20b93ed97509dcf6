"""The checkpoint's ``"nlora"`` entry as one dataclass, written and read by the module, decoded by ``nlora export``.

Format 2 (this release) keeps one state per method under ``methods``. Format 1 (written before the
``Method`` redesign) kept factor regularizers, loss terms and gradient transforms apart:
``identity.regularizers`` + ``identity.gradient_transforms``, ``loss_terms`` (by name) and
``gradient_transforms`` (a list in config order). :meth:`ContinualState.from_checkpoint` reads both,
so every checkpoint written since format 1 resumes and exports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from nlora_lightning.errors import CheckpointMismatchError

__all__ = ["CHECKPOINT_KEY", "FORMAT", "ContinualState", "identity_differences"]

CHECKPOINT_KEY = "nlora"
FORMAT = 2


def _method_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {"name": entry["name"], "weight": entry.get("weight"), "task_weights": dict(entry.get("task_weights") or {}),
            "options": dict(entry.get("options") or {})}


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity whose method entries spell out every default option (``mode: delta_w`` == no mode)."""
    from nlora_lightning.methods.base import full_options

    methods = identity.get("methods")
    if not isinstance(methods, list):
        return identity
    return {**identity, "methods": [{**m, "options": full_options(m["name"], dict(m.get("options") or {}))} for m in methods]}


def identity_differences(now: dict[str, Any], checkpoint: dict[str, Any]) -> list[str]:
    """``"key: checkpoint X vs now Y"`` for every setting of two identities that differs; a setting only
    one side has differs too, and a method's default options count as given."""
    mine, theirs = _comparable(now), _comparable(checkpoint)
    keys = [*mine, *(k for k in theirs if k not in mine)]
    return [f"{k}: checkpoint {theirs.get(k)!r} vs now {mine.get(k)!r}" for k in keys if theirs.get(k) != mine.get(k)]


@dataclass
class ContinualState:
    """What a checkpoint holds beyond Lightning's own entries.

    Args:
        identity: The settings a resumed run must agree on (model, adapters, LoRA, consolidation, methods).
        current_task: The stage being trained (-1 before the first).
        slot_live: Whether the trainable slot is part of the forward pass (the stage is not finished).
        adapters: ``ContinualLoRAModel.state_dict()`` (finished tasks' factors), ``None`` for full fine-tuning.
        methods: Each method's ``state_dict()``, by method name.
    """

    identity: dict[str, Any]
    current_task: int
    slot_live: bool
    adapters: Optional[dict[str, Any]]
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format": FORMAT, "identity": self.identity, "current_task": self.current_task,
            "slot_live": self.slot_live, "adapters": self.adapters, "methods": self.methods,
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], source: str = "this checkpoint") -> "ContinualState":
        """Decode the ``nlora`` entry of format 1 or 2.

        Raises:
            CheckpointMismatchError: If there is no ``nlora`` entry or its format is newer than this release's.
        """
        entry = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
        if entry is None:
            raise CheckpointMismatchError(f"{source} was not written by nlora_lightning (no 'nlora' entry)")
        version = int(entry.get("format", 1))
        if version > FORMAT:
            raise CheckpointMismatchError(f"{source} has checkpoint format {version}; this release reads formats 1 to {FORMAT}")
        identity = dict(entry["identity"])
        methods = entry.get("methods")
        if version == 1:
            regularizers = identity.pop("regularizers", [])
            transforms = identity.pop("gradient_transforms", [])
            identity["methods"] = [_method_entry(e) for e in [*regularizers, *transforms]]
            methods = dict(entry.get("loss_terms") or {})
            for config, state in zip(transforms, entry.get("gradient_transforms") or []):
                methods[config["name"]] = state
        return cls(identity=identity, current_task=int(entry["current_task"]), slot_live=bool(entry["slot_live"]),
                   adapters=entry.get("adapters"), methods=dict(methods or {}))

    # ----- what nlora export reads ----------------------------------------------------------------
    @property
    def adapter_mode(self) -> Optional[str]:
        return self.identity.get("adapters")

    @property
    def lora(self) -> dict[str, Any]:
        return dict(self.identity.get("lora") or {})

"""What an export reads from a run folder: its checkpoint (``weights_only`` only), model settings and adapters."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from torch import Tensor

from nlora_lightning.checkpoint import ContinualState
from nlora_lightning.errors import ConfigurationError, ExportError

__all__ = ["RunSource", "TaskAdapter", "checkpoint_path", "collect_adapters", "load_checkpoint", "read_run",
           "unfinished_description"]

_DATAMODULE_KEY = "TaskSequenceDataModule"  # Lightning stores a data module's state under its class name


@dataclass
class TaskAdapter:
    """One stage's LoRA factors, raw (PEFT applies ``scaling = lora_alpha / r`` itself)."""

    index: int
    name: Optional[str]
    A: dict[str, Tensor]  # layer name -> r x d_in
    B: dict[str, Tensor]  # layer name -> d_out x r
    scaling: float
    origin: str  # "snapshot" (finished task) or "trainable slot" (saved before the task was finished)

    @property
    def folder(self) -> str:
        mark = "_unfinished" if self.origin == "trainable slot" else ""  # --allow-unfinished: visible in the listing
        if not self.name:
            return f"task_{self.index}{mark}"
        return f"task_{self.index}_" + re.sub(r"[^A-Za-z0-9_.+-]", "_", self.name) + mark

    def peft_state_dict(self) -> dict[str, Tensor]:
        """PEFT's key names: ``base_model.model.<layer>.lora_A.weight`` (adapter name left out on disk)."""
        return {f"base_model.model.{layer}.lora_{part}.weight": factors[layer].contiguous()
                for layer in self.A for part, factors in (("A", self.A), ("B", self.B))}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True`` (never anything less safe).

    Raises:
        ExportError: If the file cannot be loaded that way.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ExportError(
            f"could not load checkpoint {path} with torch.load(weights_only=True) ({_short_reason(error)}); "
            "nlora export never falls back to weights_only=False (that could run arbitrary pickled code): "
            "the file is corrupt, truncated, or holds objects nlora_lightning checkpoints never contain"
        ) from error


def _short_reason(error: Exception) -> str:
    # torch's message is a page long and suggests weights_only=False; keep only the cause.
    text = str(error).split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def checkpoint_path(run_dir: Path, checkpoint: Optional[str | os.PathLike]) -> Path:
    if checkpoint is None:
        path = run_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: the run wrote no last checkpoint (ModelCheckpoint with save_last=true); "
                "pick another checkpoint file with --checkpoint PATH"
            )
        return path
    path = Path(checkpoint)
    if not path.is_file() and not path.is_absolute() and (run_dir / path).is_file():
        path = run_dir / path
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {str(checkpoint)!r}: no such file (also looked inside {run_dir})")
    return path


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def _model_settings(checkpoint: dict[str, Any], config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    # The checkpoint's own hyperparameters describe exactly the weights being exported; config.yaml
    # is the fallback (and may have been overwritten by a later run in the same folder).
    hparams = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    settings = hparams or dict(config.get("model") or {})
    if not settings:
        raise ExportError(
            "cannot tell which base model the run used: the checkpoint has no hyper_parameters "
            f"and {run_dir / 'config.yaml'} no model section"
        )
    return settings


def _stage_names(checkpoint: dict[str, Any], config: dict[str, Any]) -> list[str]:
    data_state = checkpoint.get(_DATAMODULE_KEY) or {}
    names, joint = data_state.get("task_names"), data_state.get("joint", False)
    if names is None and config.get("data"):
        from nlora_lightning.data.benchmark import resolve_task_names

        data = config["data"]
        names, joint = resolve_task_names(data.get("tasks"), data.get("preset")), bool(data.get("joint", False))
    if not names:
        return []
    return ["+".join(names)] if joint else list(names)


def collect_adapters(
    state: ContinualState, slot_state: dict[str, Tensor], stage_names: Sequence[str]
) -> list[TaskAdapter]:
    """Every trained stage's factors: the finished ones from the store, an unfinished one from the slot.

    Args:
        state: The checkpoint's decoded ``nlora`` entry.
        slot_state: ``checkpoint["state_dict"]`` (the trainable slot as ``model.<layer>.lora_A/B``).
        stage_names: Name of each stage, in order (may be empty).
    """
    store = state.adapters
    layers = list(store["layers"])

    def name_of(index: int) -> Optional[str]:
        return stage_names[index] if index < len(stage_names) else None

    adapters = [
        TaskAdapter(int(t), name_of(int(t)), dict(s["A"]), dict(s["B"]), float(s["scaling"]), "snapshot")
        for t, s in sorted(store["snapshots"].items(), key=lambda item: int(item[0]))
    ]
    current = state.current_task
    if state.slot_live and current >= 0 and current not in {a.index for a in adapters}:
        missing = [n for n in layers if f"model.{n}.lora_A" not in slot_state or f"model.{n}.lora_B" not in slot_state]
        if missing:
            raise ExportError(
                f"the checkpoint's trainable slot lacks layer(s) {missing[:3]} for the unfinished task {current}"
            )
        lora = state.lora
        adapters.append(TaskAdapter(
            current, name_of(current),
            {n: slot_state[f"model.{n}.lora_A"] for n in layers},
            {n: slot_state[f"model.{n}.lora_B"] for n in layers},
            float(lora["alpha"]) / int(lora["r"]), "trainable slot",
        ))
    return adapters


@dataclass
class RunSource:
    """What an export needs from a run: its checkpoint, model settings and adapters."""

    run_dir: Path
    checkpoint_path: Path
    checkpoint: dict[str, Any]
    state: ContinualState
    settings: dict[str, Any]  # the module's init args
    adapters: list[TaskAdapter]

    @property
    def shared(self) -> bool:  # one adapter trained through all tasks: its snapshots are cumulative
        return self.state.adapter_mode == "shared"


def read_run(run_dir: Path, path: Path, merge: bool) -> RunSource:
    """The run's checkpoint at ``path`` (see :func:`checkpoint_path`), decoded, with its settings and adapters.

    Raises:
        ExportError: If the checkpoint does not load with ``weights_only=True`` or holds no adapter.
        CheckpointMismatchError: If it was not written by nlora_lightning.
        ConfigurationError: For ``merge`` with a quantized base.
    """
    ckpt = load_checkpoint(path)
    state = ContinualState.from_checkpoint(ckpt, str(path))
    if state.adapters is None:
        raise ExportError(
            f"{path} is from a full fine-tuning run (adapters: none): it has no LoRA adapters to export "
            "and nothing to merge; its full weights are in the checkpoint's state_dict"
        )
    config = _read_config(run_dir)
    settings = _model_settings(ckpt, config, run_dir)
    if merge and settings.get("quantization"):
        raise ConfigurationError(
            "--merge: merging into a 4/8-bit quantized base is not supported; export the adapters without --merge"
        )
    adapters = collect_adapters(state, ckpt.get("state_dict") or {}, _stage_names(ckpt, config))
    if not adapters:
        raise ExportError(f"{path} holds no trained adapter yet (saved before the first task)")
    return RunSource(run_dir, path, ckpt, state, settings, adapters)


def unfinished_description(run: RunSource) -> Optional[str]:
    """What is unfinished about the run (None when it finished): its status, the half-trained task."""
    slot = [a for a in run.adapters if a.origin == "trainable slot"]
    status = _run_status(run.run_dir)  # None for a folder without run_info.json: the checkpoint alone decides
    if not slot and status in (None, "finished"):
        return None
    parts = [f"{len(run.adapters) - len(slot)} task(s) finished"]
    if slot:
        named = f"task {slot[0].index}" + (f" ({slot[0].name})" if slot[0].name else "")
        parts.append(f"{named} saved half-trained, exported as {slot[0].folder}")
    return (f"status {status}; " if status else "") + ", ".join(parts)


def _run_status(run_dir: Path) -> Optional[str]:
    try:
        return json.loads((run_dir / "run_info.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


"""``nlora export RUN_DIR --out DIR [--merge]``: a finished run's adapters in PEFT's format.

    OUT/task_<t>_<name>/adapter_config.json, adapter_model.safetensors   one PEFT LoRA adapter per task
    OUT/merged/                    with --merge: the base with every update added in (plain transformers)
    OUT/export_info.json           tasks, base model, how to load

The checkpoint is read with ``torch.load(weights_only=True)`` only: exporting never unpickles
arbitrary objects. The whole export is built in a temporary sibling of OUT and renamed into place
at the end, so a failure leaves no half-written export.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import yaml
from safetensors.torch import save_file
from torch import Tensor

from nlora_lightning.checkpoint import ContinualState
from nlora_lightning.errors import (CheckpointMismatchError, ConfigurationError, ExportError, NLoRAError, RunDirectoryError,
                                    UnfinishedRunError)
from nlora_lightning.io import write_json_atomic
from nlora_lightning.models.loading import load_model, load_tokenizer, random_init_config, resolve_source
from nlora_lightning.models.tokenizer import BYTE_TOKENIZER

__all__ = ["ExportError", "TaskAdapter", "export_run", "load_checkpoint", "main"]

_EXPORT_FORMAT = 1
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


def _checkpoint_path(run_dir: Path, checkpoint: Optional[str | os.PathLike]) -> Path:
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


def _write_adapter(adapter: TaskAdapter, folder: Path, r: int, dropout: float, layers: list[str],
                   task_type: str, base_name: Optional[str]) -> None:
    from peft import LoraConfig

    # Full layer names as target_modules: PEFT adapts exactly the layers this run adapted.
    alpha = adapter.scaling * r
    config = LoraConfig(
        r=r, lora_alpha=int(alpha) if float(alpha).is_integer() else alpha, lora_dropout=dropout,
        target_modules=layers, task_type=task_type, base_model_name_or_path=base_name, bias="none",
    )
    config.save_pretrained(str(folder))
    save_file(adapter.peft_state_dict(), str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def _merge_updates(model: torch.nn.Module, adapters: Sequence[TaskAdapter]) -> None:
    """Add ``scaling * B @ A`` of every adapter into the target weights, in place."""
    params_by_ptr: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        params_by_ptr.setdefault(param.data_ptr(), []).append(name)
    for layer in adapters[0].A:
        weight = model.get_submodule(layer).weight
        if len(params_by_ptr.get(weight.data_ptr(), [])) > 1:
            tied = params_by_ptr[weight.data_ptr()]
            raise ConfigurationError(f"cannot merge into {layer}: its weight is tied to {tied}")
        work_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        delta = sum(a.scaling * (a.B[layer].to(work_dtype) @ a.A[layer].to(work_dtype)) for a in adapters)
        if tuple(delta.shape) != tuple(weight.shape):
            raise CheckpointMismatchError(
                f"{layer}: update {tuple(delta.shape)} does not fit the rebuilt base weight {tuple(weight.shape)}"
            )
        with torch.no_grad():
            weight.copy_((weight.to(work_dtype) + delta).to(weight.dtype))


@contextlib.contextmanager
def _staged_directory(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling of ``out_dir`` that replaces it on success and vanishes on failure."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; give OUT an ordinary mode
        yield staging
        previous = None
        if out_dir.is_dir():
            previous = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, previous / "old")
        try:
            os.replace(staging, out_dir)
        except BaseException:
            if previous is not None:
                os.replace(previous / "old", out_dir)
            raise
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_out_dir(out_dir: Path, run_dir: Path, checkpoint_path: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirectoryError(f"--out {out_dir} exists and is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise RunDirectoryError(
            f"--out {out_dir} exists and is not empty; choose another folder or pass --overwrite"
        )
    out = out_dir.resolve()
    for protected in (run_dir.resolve(), checkpoint_path.resolve()):
        if protected == out or out in protected.parents:
            raise RunDirectoryError(f"--out {out_dir} would replace {protected}; export into a separate folder")


@dataclass
class _Run:
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


@dataclass
class _Base:
    source: Optional[str]  # a folder or hub id from_pretrained reads; None for random_init
    tokenizer: Any
    task_type: str  # PEFT's: CAUSAL_LM or SEQ_2_SEQ_LM


def _read_run(
    run_dir: Path, checkpoint: Optional[str | os.PathLike], out_dir: Path, merge: bool, overwrite: bool
) -> _Run:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist (expected a folder written by nlora fit)")
    checkpoint_path = _checkpoint_path(run_dir, checkpoint)
    _check_out_dir(out_dir, run_dir, checkpoint_path, overwrite)
    ckpt = load_checkpoint(checkpoint_path)
    state = ContinualState.from_checkpoint(ckpt, str(checkpoint_path))
    if state.adapters is None:
        raise ExportError(
            f"{checkpoint_path} is from a full fine-tuning run (adapters: none): it has no LoRA adapters to export "
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
        raise ExportError(f"{checkpoint_path} holds no trained adapter yet (saved before the first task)")
    return _Run(run_dir, checkpoint_path, ckpt, state, settings, adapters)


def _base(settings: dict[str, Any]) -> _Base:
    random_init, trust = settings.get("random_init"), bool(settings.get("trust_remote_code", False))
    if random_init is not None:
        tokenizer = load_tokenizer(None, settings.get("tokenizer") or BYTE_TOKENIZER, trust)
        is_seq2seq = bool(random_init_config(random_init, tokenizer).is_encoder_decoder)
        return _Base(None, tokenizer, "SEQ_2_SEQ_LM" if is_seq2seq else "CAUSAL_LM")
    from transformers import AutoConfig

    source = resolve_source(settings["model_name_or_path"], settings.get("gguf_file"))
    tokenizer = load_tokenizer(source, settings.get("tokenizer"), trust)
    is_seq2seq = bool(AutoConfig.from_pretrained(source, trust_remote_code=trust).is_encoder_decoder)
    return _Base(source, tokenizer, "SEQ_2_SEQ_LM" if is_seq2seq else "CAUSAL_LM")


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, merge: bool = False,
               checkpoint: Optional[str | os.PathLike] = None, overwrite: bool = False,
               allow_unfinished: bool = False) -> Path:
    """Export a run's per-task LoRA adapters in PEFT's format (and, with ``merge``, a merged model).

    Args:
        run_dir: A run folder written by ``nlora fit`` (``config.yaml``, ``checkpoints/last.ckpt``).
        out_dir: Where the export goes; must not exist or be empty unless ``overwrite``.
        merge: Also write ``OUT/merged``: the base with every task's update added in.
        checkpoint: Another checkpoint file to export instead of ``checkpoints/last.ckpt``.
        overwrite: Replace a non-empty ``out_dir``.
        allow_unfinished: Export a run that stopped before its last task (refused otherwise); the
            half-trained task's folder ends in ``_unfinished`` and ``export_info.json`` names it.

    Returns:
        ``out_dir``, resolved.

    Raises:
        FileNotFoundError: If the run folder or its checkpoint is missing.
        ExportError: If the checkpoint does not load with ``weights_only=True`` or holds no adapters
            (full fine-tuning).
        CheckpointMismatchError: If the checkpoint was not written by nlora_lightning.
        ConfigurationError: For ``merge`` with a quantized base.
        RunDirectoryError: If ``out_dir`` is not empty (and not ``overwrite``) or would replace the run.
        UnfinishedRunError: If the run is unfinished and not ``allow_unfinished``.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir).resolve()  # resolved: "--out ." has no name to stage beside
    run = _read_run(run_dir, checkpoint, out_dir, merge, overwrite)
    unfinished = _unfinished_description(run)
    if unfinished and not allow_unfinished:
        raise UnfinishedRunError(f"run {run_dir} is unfinished ({unfinished}); its adapters are not the final ones. "
                                 "Resume it (nlora fit ... --ckpt_path last), or export it as is with --allow-unfinished")
    base = _base(run.settings)
    store, dropout = run.state.adapters, float(run.state.lora.get("dropout", 0.0))
    with _staged_directory(out_dir) as staging:
        for adapter in run.adapters:
            _write_adapter(adapter, staging / adapter.folder, int(store["r"]), dropout, list(store["layers"]),
                           base.task_type, base.source)
        if merge:
            settings = run.settings
            model = load_model(
                base.source, random_init=settings.get("random_init"), tokenizer=base.tokenizer,
                torch_dtype=settings.get("torch_dtype", "float32"),
                trust_remote_code=bool(settings.get("trust_remote_code", False)), seed=int(settings.get("seed", 0)),
            )
            # A shared adapter's snapshots are cumulative: the last one alone is the final update.
            _merge_updates(model, run.adapters[-1:] if run.shared else run.adapters)
            model.save_pretrained(str(staging / "merged"))
            base.tokenizer.save_pretrained(str(staging / "merged"))
        write_json_atomic(staging / "export_info.json", {**_export_info(run, base, merge, out_dir), "unfinished": unfinished})
    return out_dir


def _unfinished_description(run: _Run) -> Optional[str]:
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


def _export_info(run: _Run, base: _Base, merge: bool, out_dir: Path) -> dict[str, Any]:
    settings, store = run.settings, run.state.adapters
    r = int(store["r"])
    auto = "AutoModelForSeq2SeqLM" if base.task_type == "SEQ_2_SEQ_LM" else "AutoModelForCausalLM"
    if settings.get("random_init") is not None:
        base_load = (
            f"nlora_lightning.models.loading.load_backbone(None, random_init={settings['random_init']!r}, "
            f"tokenizer={settings.get('tokenizer') or BYTE_TOKENIZER!r}, seed={int(settings.get('seed', 0))}).model"
        )
    else:
        base_load = f"transformers.{auto}.from_pretrained({base.source!r})"
    names = [a.folder for a in run.adapters]
    how = {
        "base": base_load,
        "one_task": f"peft.PeftModel.from_pretrained(base, '{out_dir}/{names[0]}', adapter_name='{names[0]}')",
    }
    if run.shared:
        how["final_model"] = f"the shared adapter is cumulative: load only the last folder, {names[-1]}"
    else:
        how["all_tasks"] = (
            "peft_model.load_adapter(folder, adapter_name=name) for every other task folder, then "
            f"peft_model.base_model.set_adapter({names!r}) (the sum of all updates, as trained)"
        )
    if merge:
        how["merged"] = f"transformers.{auto}.from_pretrained('{out_dir}/merged')"
    return {
        "format": _EXPORT_FORMAT,
        "run_dir": str(run.run_dir.resolve()),
        "checkpoint": str(run.checkpoint_path.resolve()),
        "epoch": run.checkpoint.get("epoch"),
        "global_step": run.checkpoint.get("global_step"),
        "method": settings.get("method_name"),
        "adapters": run.state.adapter_mode,
        "base_model": {
            **{key: settings.get(key) for key in ("model_name_or_path", "gguf_file", "random_init", "tokenizer",
                                                  "quantization")},
            "resolved_source": base.source, "seed": int(settings.get("seed", 0)),
            "torch_dtype": settings.get("torch_dtype", "float32"),
        },
        "task_type": base.task_type,
        "lora": {"r": r, "dropout": run.state.lora.get("dropout"),
                 "target_modules": store["target_modules"], "layers": list(store["layers"])},
        "tasks": [{"index": a.index, "name": a.name, "folder": a.folder, "scaling": a.scaling,
                   "lora_alpha": a.scaling * r, "from": a.origin} for a in run.adapters],
        "merged": "merged" if merge else None,
        "how_to_load": how,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``nlora export RUN_DIR --out DIR [--merge] [--checkpoint PATH] [--overwrite]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="nlora export", description="Export a run's per-task LoRA adapters in PEFT's format."
    )
    parser.add_argument("run_dir", help="a run folder written by nlora fit")
    parser.add_argument("--out", required=True, help="the export folder (must not exist or be empty)")
    parser.add_argument("--merge", action="store_true",
                        help="also write OUT/merged: the base with every task's update added in")
    parser.add_argument("--checkpoint", default=None,
                        help="export this checkpoint instead of RUN_DIR/checkpoints/last.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="export a run that stopped before its last task (its half-trained task is marked)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        out = export_run(args.run_dir, args.out, merge=args.merge, checkpoint=args.checkpoint,
                         overwrite=args.overwrite, allow_unfinished=args.allow_unfinished)
    except (NLoRAError, OSError) as error:  # bad input, missing files, an unreadable base model
        print(f"nlora export: error: {error}", file=sys.stderr)
        return 1
    print(f"exported to {out}")
    return 0

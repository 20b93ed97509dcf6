"""Writing an export: PEFT adapter folders, the merged model and ``export_info.json``, staged then renamed."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from safetensors.torch import save_file

from nlora_lightning.errors import (CheckpointMismatchError, ConfigurationError, NLoRAError, RunDirectoryError,
                                    UnfinishedRunError)
from nlora_lightning.export.source import RunSource, TaskAdapter, checkpoint_path, read_run, unfinished_description
from nlora_lightning.io import write_json_atomic
from nlora_lightning.models.loading import load_model, load_tokenizer, random_init_config, resolve_source
from nlora_lightning.models.tokenizer import BYTE_TOKENIZER

__all__ = ["export_run", "main"]

_EXPORT_FORMAT = 1


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
def staged_directory(out_dir: Path) -> Iterator[Path]:
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


def check_out_dir(out_dir: Path, run_dir: Path, checkpoint: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirectoryError(f"--out {out_dir} exists and is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise RunDirectoryError(
            f"--out {out_dir} exists and is not empty; choose another folder or pass --overwrite"
        )
    out = out_dir.resolve()
    for protected in (run_dir.resolve(), checkpoint.resolve()):
        if protected == out or out in protected.parents:
            raise RunDirectoryError(f"--out {out_dir} would replace {protected}; export into a separate folder")


@dataclass
class _Base:
    source: Optional[str]  # a folder or hub id from_pretrained reads; None for random_init
    tokenizer: Any
    task_type: str  # PEFT's: CAUSAL_LM or SEQ_2_SEQ_LM


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
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist (expected a folder written by nlora fit)")
    path = checkpoint_path(run_dir, checkpoint)
    check_out_dir(out_dir, run_dir, path, overwrite)
    run = read_run(run_dir, path, merge)
    unfinished = unfinished_description(run)
    if unfinished and not allow_unfinished:
        raise UnfinishedRunError(f"run {run_dir} is unfinished ({unfinished}); its adapters are not the final ones. "
                                 "Resume it (nlora fit ... --ckpt_path last), or export it as is with --allow-unfinished")
    base = _base(run.settings)
    store, dropout = run.state.adapters, float(run.state.lora.get("dropout", 0.0))
    with staged_directory(out_dir) as staging:
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



def _export_info(run: RunSource, base: _Base, merge: bool, out_dir: Path) -> dict[str, Any]:
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

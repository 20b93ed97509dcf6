"""``nlora export RUN_DIR --out DIR [--merge]``: a finished run's adapters in PEFT's format.

    OUT/task_<t>_<name>/adapter_config.json, adapter_model.safetensors   one PEFT LoRA adapter per task
    OUT/merged/                    with --merge: the base with every update added in (plain transformers)
    OUT/export_info.json           tasks, base model, how to load

``source`` reads the run (the checkpoint with ``torch.load(weights_only=True)`` only: exporting never
unpickles arbitrary objects); ``writer`` builds the whole export in a temporary sibling of OUT and
renames it into place at the end, so a failure leaves no half-written export.
"""

from nlora_lightning.errors import ExportError
from nlora_lightning.export.source import TaskAdapter, load_checkpoint
from nlora_lightning.export.writer import export_run, main

__all__ = ["ExportError", "TaskAdapter", "export_run", "load_checkpoint", "main"]

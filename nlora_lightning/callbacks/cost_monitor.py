"""CostMonitor: what a continual-learning run costs, per task and in total.

Recorded per training stage (task): training and evaluation wall time, tokens processed per
second in each, trainable parameters, and the bytes of the state a checkpoint stores after the
task (adapters, regularizer state: how the method's state grows with the number of tasks). Over
the run: peak memory. On GPU that is the CUDA allocator's peak (``torch.cuda.max_memory_allocated``);
on CPU the process's resident-set high-water mark (``VmHWM`` / ``ru_maxrss``), which includes the
Python runtime and the frozen base model. ``benchmarks/memory.py`` counts live tensors exactly
instead; its per-operator hook is too slow to run over a whole fit.

``RunReport`` puts :meth:`CostMonitor.summary` into ``run_info.json`` as ``cost``; ``report.md``
and ``nlora compare`` read it from there.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["CostMonitor", "state_bytes"]


def state_bytes(state: Any) -> int:
    """Bytes of every tensor in a (nested) state: dicts, lists and tuples are walked, each storage counted once.

    Example:
        >>> state_bytes({"a": torch.zeros(4), "b": [torch.zeros(2, dtype=torch.float16)]})
        20
    """
    seen: set[int] = set()

    def walk(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            key = storage.data_ptr()
            if key in seen and key != 0:
                return 0
            seen.add(key)
            return value.numel() * value.element_size() if key == 0 else storage.nbytes()
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        return 0

    return walk(state)


def _cpu_peak_bytes() -> int:
    """The process's resident-set high-water mark (Linux: kilobytes; macOS: bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _tokens(batch: Any) -> int:
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    return int(mask.sum()) if isinstance(mask, torch.Tensor) else 0


class CostMonitor(Callback):
    """Measures the cost of a fit per task (see the module docstring).

    ``summary()`` holds ``per_task`` (one entry per stage: ``task``, ``train_time_s``,
    ``eval_time_s``, ``train_tokens_per_s``, ``eval_tokens_per_s``, ``trainable_params``,
    ``state_bytes``), the totals ``train_time_s``, ``eval_time_s``, ``train_tokens_per_s``,
    ``eval_tokens_per_s``, and ``peak_memory_bytes`` with ``peak_memory_source``.
    Evaluation tokens are prompt tokens (generated tokens are not counted).

    Example:
        >>> trainer = pl.Trainer(callbacks=[CostMonitor(), RunReport()])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__()
        self.per_task: list[dict[str, Any]] = []
        self._started: dict[str, float] = {}
        self._eval_time_s = 0.0  # evaluation outside a stage (the zero-shot baseline) is counted in the totals only
        self._eval_tokens = 0
        self._device_type: Optional[str] = None

    # ----- bookkeeping -------------------------------------------------------------------------
    def _entry(self, trainer: pl.Trainer) -> dict[str, Any]:
        datamodule = trainer.datamodule
        stage = datamodule.stage_for_epoch(trainer.current_epoch)
        while len(self.per_task) <= stage:
            self.per_task.append({"task": datamodule.stage_name(len(self.per_task)), "train_time_s": 0.0, "eval_time_s": 0.0,
                                  "train_tokens": 0, "eval_tokens": 0, "trainable_params": None, "state_bytes": None})
        return self.per_task[stage]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._device_type = pl_module.device.type
        if self._device_type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    # ----- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        entry = self._entry(trainer)
        entry["trainable_params"] = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        self._started["train"] = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._entry(trainer)["train_tokens"] += _tokens(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        entry = self._entry(trainer)
        entry["train_time_s"] += time.perf_counter() - self._started.pop("train", time.perf_counter())
        if trainer.datamodule.is_stage_end(trainer.current_epoch):
            entry["state_bytes"] = self._stored_bytes(pl_module)

    @staticmethod
    def _stored_bytes(pl_module: pl.LightningModule) -> int:
        """What a checkpoint keeps of the method: the module's state dict plus its ``on_save_checkpoint`` extras."""
        extra: dict[str, Any] = {}
        pl_module.on_save_checkpoint(extra)
        return state_bytes(pl_module.state_dict()) + state_bytes(extra)

    # ----- evaluation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started["eval"] = time.perf_counter()
        self._eval_tokens_now = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_tokens_now += _tokens(batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        elapsed = time.perf_counter() - self._started.pop("eval", time.perf_counter())
        self._eval_time_s += elapsed
        self._eval_tokens += self._eval_tokens_now
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            entry = self._entry(trainer)
            entry["eval_time_s"] += elapsed
            entry["eval_tokens"] += self._eval_tokens_now

    # ----- results -------------------------------------------------------------------------------
    def peak_memory(self) -> tuple[int, str]:
        if self._device_type == "cuda":
            return int(torch.cuda.max_memory_allocated()), "cuda_max_memory_allocated"
        return _cpu_peak_bytes(), "process_rss_high_water_mark"

    def summary(self) -> dict[str, Any]:
        def rate(tokens: int, seconds: float) -> Optional[float]:
            return round(tokens / seconds, 1) if seconds > 0 and tokens else None

        per_task = [{**{k: v for k, v in e.items() if not k.endswith("_tokens")},
                     "train_time_s": round(e["train_time_s"], 3), "eval_time_s": round(e["eval_time_s"], 3),
                     "train_tokens_per_s": rate(e["train_tokens"], e["train_time_s"]),
                     "eval_tokens_per_s": rate(e["eval_tokens"], e["eval_time_s"])} for e in self.per_task]
        train_time = sum(e["train_time_s"] for e in self.per_task)
        peak, source = self.peak_memory()
        return {
            "per_task": per_task,
            "train_time_s": round(train_time, 3),
            "eval_time_s": round(self._eval_time_s, 3),
            "train_tokens_per_s": rate(sum(e["train_tokens"] for e in self.per_task), train_time),
            "eval_tokens_per_s": rate(self._eval_tokens, self._eval_time_s),
            "peak_memory_bytes": peak,
            "peak_memory_source": source,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"per_task": self.per_task, "eval_time_s": self._eval_time_s, "eval_tokens": self._eval_tokens}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.per_task = [dict(e) for e in state_dict.get("per_task", [])]
        self._eval_time_s = float(state_dict.get("eval_time_s", 0.0))
        self._eval_tokens = int(state_dict.get("eval_tokens", 0))

"""Empirical diagonal Fisher information at a task's end, and the online importance EWC and EWC-LoRA share.

``F = (1/N) sum_i g_i^2`` over a seeded subset of ``N`` training samples of the finished task, with
``g_i`` the gradient of sample i's own loss (the mean cross-entropy over its answer tokens): the
textbook empirical Fisher. Samples are processed ``batch_size`` at a time, yet each keeps its own
gradient: the per-sample losses are summed, so one backward gives every sample's gradient at each
adapted layer's output, and the gradient of a weight is ``grad_output^T input`` over that sample's
positions. ``per_sample=False`` squares each batch's mean gradient instead (``F = (1/N) sum_b |b|
g_b^2``), the form of the EWC-LoRA release; it weighs each sample by its number of answer tokens
(the batch loss is a mean over tokens, not over samples).

Gradients come from ``torch.autograd.grad``, so the parameters' ``.grad`` buffers are left alone.
The pass runs in eval mode (no dropout) under the trainer's precision context. Every rank computes
the same estimate from the same samples, so the state stays identical across ranks.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor

from nlora_lightning.methods.base import Method

__all__ = ["OnlineImportance", "layer_signals", "slot_fisher", "update_fisher"]

Batch = dict[str, Tensor]
# Per unit (one sample, or one batch): its weight and, per adapted layer, (grad_output, input) rows
# over the unit's positions, one pair per call of the layer.
Signals = tuple[int, dict[str, list[tuple[Tensor, Tensor]]]]


@contextmanager
def _estimation_mode(module: Any) -> Iterator[None]:
    """Eval mode, gradients on, embeddings' output requiring grad (so every layer output is in the graph)."""
    from nlora_lightning.models.forward import eval_mode  # here: importing the methods must not load transformers

    model = module.model

    def require_grad(_module, _args, output):
        return output if output.requires_grad else output.requires_grad_()

    handle = model.get_input_embeddings().register_forward_hook(require_grad)
    trainer = module._trainer
    precision = trainer.precision_plugin.train_step_context() if trainer is not None else nullcontext()
    try:
        with torch.enable_grad(), precision, eval_mode(model):
            yield
    finally:
        handle.remove()


def layer_signals(module: Any, batches: Iterable[Batch], per_sample: bool = True) -> Iterator[Signals]:
    """Per sample (or per batch), the gradient of its loss at every adapted layer's output, with the layer's input."""
    from nlora_lightning.models.forward import per_sample_loss

    calls: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def keep(name):
        def hook(_module, args, output):
            calls.setdefault(name, []).append((args[0].detach(), output))
        return hook

    handles = [layer.register_forward_hook(keep(name)) for name, layer in module.adapters.layers.items()]
    try:
        with _estimation_mode(module):
            for batch in batches:
                calls.clear()
                out = module.task_forward(batch)
                size = int(batch["input_ids"].shape[0])
                loss = per_sample_loss(out, size).sum() if per_sample else out.loss
                keys = [(name, i) for name, seen in calls.items() for i in range(len(seen))]
                grads = torch.autograd.grad(loss, [calls[n][i][1] for n, i in keys], allow_unused=True)
                pairs: dict[str, list[tuple[Tensor, Tensor]]] = {}
                for (name, i), grad in zip(keys, grads):
                    if grad is not None:
                        pairs.setdefault(name, []).append((grad, calls[name][i][0]))
                calls.clear()
                if not per_sample:
                    yield size, {n: [(g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])) for g, x in p] for n, p in pairs.items()}
                    continue
                for sample in range(size):  # rows of one sample: its gradient is the one its own loss gives
                    yield 1, {n: [(g[sample].reshape(-1, g.shape[-1]), x[sample].reshape(-1, x.shape[-1])) for g, x in p]
                              for n, p in pairs.items()}
    finally:
        for handle in handles:
            handle.remove()
        calls.clear()


def _finish(total: dict[str, Tensor], count: int) -> dict[str, Tensor]:
    if count == 0:
        raise ValueError("a Fisher estimate needs at least one training sample; the finished task has none")
    return {name: (value / count).cpu() for name, value in total.items()}


def update_fisher(module: Any, batches: Iterable[Batch], per_sample: bool = True) -> dict[str, Tensor]:
    """Diagonal Fisher of every adapted layer's full update ``Delta W`` (d_out x d_in, float32, CPU).

    ``dL/dDelta W`` is the gradient of the layer's effective weight, ``grad_output^T input`` over
    positions: taken from the layer's input and output, it works for quantized bases too and never
    touches the frozen weights.
    """
    layers = module.adapters.layers
    total = {n: torch.zeros(l.out_features, l.in_features, device=l.lora_A.device) for n, l in layers.items()}
    count = 0
    for weight, signals in layer_signals(module, batches, per_sample):
        for name, pairs in signals.items():
            grad = sum(g.float().transpose(0, 1) @ x.float() for g, x in pairs)
            total[name].add_(grad.square_(), alpha=weight)
        count += weight
    return _finish(total, count)


def slot_fisher(module: Any, batches: Iterable[Batch], per_sample: bool = True) -> dict[str, Tensor]:
    """Diagonal Fisher of the trainable slot's factors, keys ``"<layer>.A"`` and ``"<layer>.B"`` (float32, CPU).

    The slot adds ``s B A x`` to the layer's output (no dropout in eval mode), so with ``g`` the
    gradient at the output: ``dL/dB = s g^T (x A^T)`` and ``dL/dA = s (g B)^T x``.
    """
    layers = module.adapters.layers
    if not all(layer.slot_enabled for layer in layers.values()):
        raise RuntimeError("the slot's Fisher needs the slot in the forward pass (it is switched off)")
    total: dict[str, Tensor] = {}
    for name, layer in layers.items():
        total[f"{name}.A"] = torch.zeros_like(layer.lora_A, dtype=torch.float32)
        total[f"{name}.B"] = torch.zeros_like(layer.lora_B, dtype=torch.float32)
    count = 0
    for weight, signals in layer_signals(module, batches, per_sample):
        for name, pairs in signals.items():
            layer = layers[name]
            A, B = layer.lora_A.detach().float(), layer.lora_B.detach().float()
            grad_B = sum(g.float().transpose(0, 1) @ (x.float() @ A.transpose(0, 1)) for g, x in pairs) * layer.scaling
            grad_A = sum((g.float() @ B).transpose(0, 1) @ x.float() for g, x in pairs) * layer.scaling
            total[f"{name}.A"].add_(grad_A.square_(), alpha=weight)
            total[f"{name}.B"].add_(grad_B.square_(), alpha=weight)
        count += weight
    return _finish(total, count)


class OnlineImportance(Method):
    """Importance and anchor per tensor name, folded in once per finished task (online EWC).

    ``omega <- gamma * omega + F_t`` (Schwarz et al. 2018; the EWC-LoRA release uses gamma = 1).
    State (importance, anchor, tasks folded in) travels in the module's checkpoint.
    """

    def __init__(self, fisher_samples: int, fisher_batch_size: int, fisher_per_sample: bool, gamma: float) -> None:
        for label, value in (("fisher_samples", fisher_samples), ("fisher_batch_size", fisher_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma (decay of earlier tasks' importance) must lie in [0, 1], got {gamma!r}")
        self.fisher_samples = fisher_samples
        self.fisher_batch_size = fisher_batch_size
        self.fisher_per_sample = bool(fisher_per_sample)
        self.gamma = float(gamma)
        self.importance: dict[str, Tensor] = {}  # CPU, float32
        self.anchor: dict[str, Tensor] = {}  # CPU
        self.tasks: list[int] = []
        self._on_device: dict[str, Tensor] = {}

    def _fold_in(self, stage: int, fisher: dict[str, Tensor], anchor: dict[str, Tensor]) -> None:
        for name, value in fisher.items():
            old = self.importance.get(name)
            self.importance[name] = value if old is None else self.gamma * old + value
        self.anchor = anchor
        self.tasks.append(stage)
        self._on_device = {}

    def _device_copy(self, kind: str, name: str, like: Tensor) -> Tensor:
        """``self.<kind>[name]`` on ``like``'s device and dtype, cached until the state changes."""
        key = f"{kind}:{name}"
        cached = self._on_device.get(key)
        if cached is None or cached.device != like.device:
            cached = self._on_device[key] = getattr(self, kind)[name].to(device=like.device, dtype=like.dtype)
        return cached

    def state_dict(self) -> dict[str, Any]:
        return {"importance": dict(self.importance), "anchor": dict(self.anchor), "tasks": list(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance = dict(state.get("importance", {}))
        self.anchor = dict(state.get("anchor", {}))
        self.tasks = [int(t) for t in state.get("tasks", [])]
        self._on_device = {}

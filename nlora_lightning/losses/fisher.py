"""Empirical diagonal Fisher information at a task's end: the mean squared gradient of the task loss.

``F = (1/N) sum_i g_i^2`` over a seeded subset of ``N`` training samples of the finished task, with
``g_i`` the gradient of sample i's own loss (the mean cross-entropy over its answer tokens): the
textbook empirical Fisher. Samples are processed ``batch_size`` at a time, yet each keeps its own
gradient: the per-sample losses are summed, so one backward gives every sample's gradient at each
adapted layer's output, and the gradient of a weight is ``grad_output^T input`` over that sample's
positions. ``per_sample=False`` squares each batch's mean gradient instead (``F = (1/N) sum_b |b|
g_b^2``), the form of the EWC-LoRA release.

Gradients come from ``torch.autograd.grad``, so the parameters' ``.grad`` buffers are left alone.
The pass runs in eval mode (no dropout) under the trainer's precision context. Every rank computes
the same estimate from the same samples, so the state stays identical across ranks.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor

from nlora_lightning.losses.heads import capture_lm_head, eval_mode, per_sample_answer_loss

__all__ = ["task_batches", "update_fisher", "slot_fisher"]

Batch = dict[str, Tensor]
# Per unit (one sample, or one batch): its weight and, per adapted layer, (grad_output, input) rows
# over the unit's positions, one pair per call of the layer.
Signals = tuple[int, dict[str, list[tuple[Tensor, Tensor]]]]


def task_batches(module: Any, stage: int, samples: int, batch_size: int) -> Iterator[Batch]:
    """``samples`` training samples of ``stage`` (drawn by (module seed, stage)), collated, on the module's device.

    Raises:
        RuntimeError: If the module has no trainer with a task-sequence data module (the data source).
    """
    from nlora_lightning.data.collate import TrainCollator

    trainer = module._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None or not hasattr(datamodule, "stage_train_examples"):
        raise RuntimeError("a Fisher estimate needs the finished task's training data: finish_task must run under a "
                           "Trainer with a TaskSequenceDataModule")
    examples = datamodule.stage_train_examples(stage)
    generator = torch.Generator().manual_seed(module.seed * 1_000_003 + stage)
    chosen = torch.randperm(len(examples), generator=generator)[:samples].tolist()
    collate = TrainCollator(datamodule.tokenizer.pad_token_id, bool(datamodule.decoder_only))
    for start in range(0, len(chosen), batch_size):
        batch = collate([examples[i] for i in chosen[start : start + batch_size]])
        yield {k: v.to(module.device) for k, v in batch.items()}


@contextmanager
def _estimation_mode(module: Any) -> Iterator[None]:
    """Eval mode, gradients on, embeddings' output requiring grad (so every layer output is in the graph)."""
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
                logits: list[Tensor] = []
                with capture_lm_head(module.model, logits):
                    batch_loss = module._task_loss(batch)
                size = int(batch["input_ids"].shape[0])
                loss = per_sample_answer_loss(logits[-1], batch["labels"], module.is_seq2seq).sum() if per_sample else batch_loss
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

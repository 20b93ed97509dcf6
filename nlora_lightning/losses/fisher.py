"""Empirical diagonal Fisher information at a task's end: the mean squared gradient of the task loss.

``F = (1/N) sum_b |b| g_b^2`` with ``g_b`` the gradient of the mean task loss on batch ``b`` of a
seeded subset of ``N`` training samples of the finished task. With batches of one sample (the
default of the terms using it) this is the textbook empirical Fisher; with larger batches it is the
form of the EWC-LoRA release (squared mini-batch gradients, weighted by batch size).

Gradients come from ``torch.autograd.grad``, so the parameters' ``.grad`` buffers are left alone.
The pass runs in eval mode (no dropout) under the trainer's precision context. Every rank computes
the same estimate from the same samples, so the state stays identical across ranks.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor

__all__ = ["task_batches", "update_fisher", "parameter_fisher"]

Batch = dict[str, Tensor]


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
    was_training = model.training

    def require_grad(_module, _args, output):
        return output if output.requires_grad else output.requires_grad_()

    handle = model.get_input_embeddings().register_forward_hook(require_grad)
    trainer = module._trainer
    precision = trainer.precision_plugin.train_step_context() if trainer is not None else nullcontext()
    model.eval()
    try:
        with torch.enable_grad(), precision:
            yield
    finally:
        handle.remove()
        model.train(was_training)


def _finish(total: dict[str, Tensor], count: int) -> dict[str, Tensor]:
    if count == 0:
        raise ValueError("a Fisher estimate needs at least one training sample; the finished task has none")
    return {name: (value / count).cpu() for name, value in total.items()}


def update_fisher(module: Any, batches: Iterable[Batch]) -> dict[str, Tensor]:
    """Diagonal Fisher of every adapted layer's full update ``Delta W`` (d_out x d_in, float32, CPU).

    ``dL/dDelta W`` equals the gradient with respect to the layer's effective weight: per layer call,
    ``grad_output^T x`` summed over positions, taken from the layer's input and output (forward hooks),
    so it works for quantized bases too and never touches the frozen weights.
    """
    layers = module.adapters.layers
    calls: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def keep(name):
        def hook(_module, args, output):
            calls.setdefault(name, []).append((args[0].detach(), output))
        return hook

    handles = [layer.register_forward_hook(keep(name)) for name, layer in layers.items()]
    total = {n: torch.zeros(l.out_features, l.in_features, device=l.lora_A.device) for n, l in layers.items()}
    count = 0
    try:
        with _estimation_mode(module):
            for batch in batches:
                calls.clear()
                loss = module._task_loss(batch)
                keys = [(name, i) for name, seen in calls.items() for i in range(len(seen))]
                outputs = [calls[name][i][1] for name, i in keys]
                grads = torch.autograd.grad(loss, outputs, allow_unused=True)
                size = int(batch["input_ids"].shape[0])
                per_layer: dict[str, Tensor] = {}
                for (name, i), grad in zip(keys, grads):
                    if grad is None:
                        continue
                    x = calls[name][i][0]
                    g = grad.reshape(-1, grad.shape[-1]).float().transpose(0, 1) @ x.reshape(-1, x.shape[-1]).float()
                    per_layer[name] = per_layer[name] + g if name in per_layer else g
                for name, g in per_layer.items():
                    total[name].add_(g.square_(), alpha=size)
                count += size
    finally:
        for handle in handles:
            handle.remove()
        calls.clear()
    return _finish(total, count)


def parameter_fisher(module: Any, batches: Iterable[Batch], parameters: dict[str, Tensor]) -> dict[str, Tensor]:
    """Diagonal Fisher of the given parameters (same shapes, float32, CPU).

    Raises:
        RuntimeError: If a parameter does not require gradients.
    """
    frozen = [name for name, p in parameters.items() if not p.requires_grad]
    if frozen:
        raise RuntimeError(f"a parameter Fisher needs trainable parameters; {frozen[:3]} do not require grad")
    names = list(parameters)
    total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in parameters.items()}
    count = 0
    with _estimation_mode(module):
        for batch in batches:
            loss = module._task_loss(batch)
            grads = torch.autograd.grad(loss, [parameters[n] for n in names], allow_unused=True)
            size = int(batch["input_ids"].shape[0])
            for name, grad in zip(names, grads):
                if grad is not None:
                    total[name].add_(grad.float().square(), alpha=size)
            count += size
    return _finish(total, count)

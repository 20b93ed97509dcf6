"""MIGU: the layers' magnitude recording, the row masks against a naive recomputation, and a tiny run."""

import csv
import json
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from nlora_lightning.methods import MIGU
from nlora_lightning.lora import ContinualLoRALinear



def make_layer(seed=0, d_in=6, d_out=9, r=4):
    torch.manual_seed(seed)
    layer = ContinualLoRALinear(nn.Linear(d_in, d_out), r, alpha=8.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def fake_module(layers, task):
    return SimpleNamespace(adapters=SimpleNamespace(layers=layers), current_task=task)


def attached(layers, task=1, **options):
    """A MIGU whose forward hooks sit on ``layers``' taps (as ``attach`` does in a module)."""
    migu = MIGU(**options)
    migu.attach(fake_module(layers, task))
    return migu


def recorded(migu, layer):
    return migu._pop(layer.slot_hidden), migu._pop(layer.slot_output)


def test_hooks_record_summed_output_magnitudes_of_A_and_B():
    layer = make_layer()
    migu = attached({"a": layer})
    x1, x2 = torch.randn(2, 3, 6), torch.randn(4, 6)  # two micro-batches of one optimizer step
    layer(x1), layer(x2)
    a, b = recorded(migu, layer)
    tokens = torch.cat([x1.reshape(-1, 6), x2])
    hidden = tokens @ layer.lora_A.detach().T
    torch.testing.assert_close(a, hidden.abs().sum(0))
    torch.testing.assert_close(b, (hidden @ layer.lora_B.detach().T).abs().sum(0))
    assert recorded(migu, layer) == (None, None)  # popping resets


def test_hooks_record_nothing_in_eval_mode_or_without_grad_and_the_layer_keeps_no_statistics():
    layer = make_layer()
    migu = attached({"a": layer})
    with torch.no_grad():
        layer(torch.randn(2, 6))
    layer.eval()
    layer(torch.randn(2, 6))
    assert recorded(migu, layer) == (None, None)
    assert not any("magnitude" in name for name in vars(layer))  # MIGU's statistics live in MIGU


def test_apply_masks_the_rows_a_naive_recomputation_selects():
    layers = {"a": make_layer(0), "b": make_layer(1, d_in=5, d_out=12, r=3)}
    migu = attached(layers, top_ratio=0.5)
    grads = {}
    for name, layer in layers.items():
        x = torch.randn(7, layer.in_features)
        layer(x).pow(2).sum().backward()
        hidden = x @ layer.lora_A.detach().T
        grads[name] = (layer.lora_A.grad.clone(), layer.lora_B.grad.clone(), hidden.abs().sum(0), (hidden @ layer.lora_B.detach().T).abs().sum(0))
    logged = migu.before_optimizer_step(fake_module(layers, task=1))
    kept = total = 0
    for name, layer in layers.items():
        grad_A, grad_B, mag_A, mag_B = grads[name]
        for param, grad, mag in ((layer.lora_A, grad_A, mag_A), (layer.lora_B, grad_B, mag_B)):
            order = sorted(mag.tolist())
            position = 0.5 * (len(order) - 1)
            low = int(position)
            threshold = order[low] + (order[min(low + 1, len(order) - 1)] - order[low]) * (position - low)
            for row, value in enumerate(mag.tolist()):
                expected = grad[row] if value >= threshold else torch.zeros_like(grad[row])
                torch.testing.assert_close(param.grad[row], expected)
                kept += value >= threshold
            total += len(order)
    assert logged == {"kept_fraction": kept / total}


def test_first_task_is_left_unmasked_by_default():
    layer = make_layer()
    migu = attached({"a": layer}, task=0)
    layer(torch.randn(3, 6)).sum().backward()
    before = layer.lora_B.grad.clone()
    assert migu.before_optimizer_step(fake_module({"a": layer}, task=0)) == {}
    assert torch.equal(layer.lora_B.grad, before)
    assert recorded(migu, layer) == (None, None)  # still consumed, so task 0's statistics never leak into task 1


def test_first_task_is_masked_when_asked_and_task_end_passes_are_discarded():
    layer = make_layer()
    migu = attached({"a": layer}, task=0, top_ratio=0.25, skip_first_task=False)
    layer(torch.randn(3, 6)).sum().backward()
    logged = migu.before_optimizer_step(fake_module({"a": layer}, task=0))
    assert logged == {"kept_fraction": (1 + 3) / (4 + 9)}  # rows at or above the 75th percentile: 1 of 4 in A, 3 of 9 in B
    layer(torch.randn(3, 6))  # e.g. a Fisher estimate at the task's end
    migu.on_task_end(fake_module({"a": layer}, task=0), 0, None)
    assert recorded(migu, layer) == (None, None)


class FirstStepOfTaskOne(pl.Callback):
    """Snapshots the slot before task 1's first step and checks which rows moved after it."""

    def __init__(self):
        self.before, self.checked = None, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if module.current_task == 1 and batch_idx == 0:
            self.before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.before is None or self.checked:
            return
        for name, param in module.named_parameters():
            if name in self.before:
                # Adam's state is fresh at a task start, so a row with zero gradient must not move at all
                unmasked = param.grad.abs().sum(1) > 0
                moved = (param.detach() != self.before[name]).any(1)
                assert torch.equal(moved, unmasked), name
                self.checked.append((name, unmasked.float().mean().item()))


@pytest.mark.slow
def test_migu_config_runs_and_masks_rows(tmp_path, accelerator, fit_method_on_tiny):
    probe = FirstStepOfTaskOne()
    cli = fit_method_on_tiny("migu", probe, tmp_path, accelerator)
    module = cli.model
    assert module.method_name == "migu" and module.adapter_mode == "shared"
    assert sorted(module.adapters.snapshots) == [0, 1]
    assert module.check_trainable_set() is None
    assert probe.checked, "task 1's first step was not observed"
    fractions = [f for name, f in probe.checked if "lora_B" in name]
    assert all(0.2 < f < 0.45 for f in fractions), fractions  # top_ratio 0.3 of each layer's B rows
    with open(tmp_path / "migu" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    kept = [(int(r["epoch"]), float(r["train/grad/migu/kept_fraction"])) for r in rows if r.get("train/grad/migu/kept_fraction")]
    assert kept and all(epoch == 1 and 0.2 < value < 0.45 for epoch, value in kept)  # task 0 unmasked
    metrics = json.loads((tmp_path / "migu" / "cl_metrics.json").read_text())
    assert len(metrics["acc_matrix"]) == 2 and metrics["BWT"] is not None

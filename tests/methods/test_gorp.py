"""GORP (LoRA part): subspaces built at task ends from Adam's first moment, projection, checkpoint state, a tiny run."""

from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.methods import build_method
from nlora_lightning.gradients.functional import energy_basis, expand_basis
from nlora_lightning.methods import GORP
from nlora_lightning.lora import ContinualLoRALinear



def fake_module(seed=0):
    torch.manual_seed(seed)
    layers = {"q": ContinualLoRALinear(nn.Linear(12, 10), 6, 12.0), "v": ContinualLoRALinear(nn.Linear(12, 8), 6, 12.0)}
    state = {}
    for layer in layers.values():
        for param in (layer.lora_A, layer.lora_B):
            moment = torch.randn(param.shape)
            moment[:2] *= 8  # a few dominant directions
            state[param] = {"exp_avg": moment}
    optimizer = SimpleNamespace(state=state)
    return SimpleNamespace(adapters=SimpleNamespace(layers=layers), _trainer=SimpleNamespace(optimizers=[optimizer]), current_task=0)


def test_task_end_builds_then_grows_the_first_moment_subspace():
    module = fake_module()
    gorp = GORP(threshold=0.9, factors=["A", "B"])
    gorp.on_task_end(module, 0, None)
    state = module._trainer.optimizers[0].state
    for name, layer in module.adapters.layers.items():
        torch.testing.assert_close(gorp.bases[f"{name}.A"], energy_basis(state[layer.lora_A]["exp_avg"], 0.9))
        torch.testing.assert_close(gorp.bases[f"{name}.B"], energy_basis(state[layer.lora_B]["exp_avg"], 0.9))
    first = dict(gorp.bases)
    following = fake_module(seed=1)
    following.adapters = module.adapters
    next_state = following._trainer.optimizers[0].state = {
        p: {"exp_avg": torch.randn(p.shape)} for l in module.adapters.layers.values() for p in (l.lora_A, l.lora_B)
    }
    gorp.on_task_end(following, 1, None)
    layer = module.adapters.layers["q"]
    torch.testing.assert_close(gorp.bases["q.A"], expand_basis(next_state[layer.lora_A]["exp_avg"], first["q.A"], 0.9))
    assert gorp.bases["q.A"].shape[1] >= first["q.A"].shape[1]


def test_apply_removes_the_stored_subspace_from_the_gradients():
    module = fake_module()
    gorp = GORP(threshold=0.95)
    assert gorp.before_optimizer_step(module) == {}  # nothing stored yet: first task untouched
    gorp.on_task_end(module, 0, None)
    for layer in module.adapters.layers.values():
        layer.lora_A.grad = torch.randn(layer.lora_A.shape)
        layer.lora_B.grad = torch.randn(layer.lora_B.shape)
    untouched = {n: l.lora_B.grad.clone() for n, l in module.adapters.layers.items()}
    logged = gorp.before_optimizer_step(module)
    for name, layer in module.adapters.layers.items():
        basis = gorp.bases[f"{name}.A"]
        assert basis.shape[1] > 0
        torch.testing.assert_close(basis.T @ layer.lora_A.grad, torch.zeros(basis.shape[1], 12), atol=1e-5, rtol=0)
        assert torch.equal(layer.lora_B.grad, untouched[name])  # factors=["A"]: B is left alone
    dims = [gorp.bases[f"{n}.A"].shape[1] / 6 for n in module.adapters.layers]
    assert logged == {"subspace_fraction": pytest.approx(sum(dims) / len(dims))}


def test_state_round_trips():
    module = fake_module()
    gorp = GORP()
    gorp.on_task_end(module, 0, None)
    restored = GORP()
    restored.load_state_dict(gorp.state_dict())
    assert restored.bases.keys() == gorp.bases.keys()
    assert all(torch.equal(restored.bases[k], gorp.bases[k]) for k in gorp.bases)


@pytest.mark.parametrize("options, message", [({"threshold": 0.0}, "threshold"), ({"factors": ["C"]}, "factors"), ({"factors": []}, "factors")])
def test_bad_options_fail_with_one_clear_error(options, message):
    with pytest.raises(ConfigurationError, match=message):
        build_method("gorp", options)


class OrthogonalInTaskOne(pl.Callback):
    """After every step from task 1 on: each projected gradient and Adam's first moment lie outside the stored subspace."""

    def __init__(self):
        self.checked = 0
        self.checked_tasks: set[int] = set()
        self.dims: dict[int, int] = {}  # task -> total basis columns seen during it

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        gorp = module.method_objects[0]
        if module.current_task < 1:
            return
        self.dims[module.current_task] = sum(b.shape[1] for b in gorp.bases.values())
        optimizer = trainer.optimizers[0]
        for name, layer in module.adapters.layers.items():
            basis = gorp.bases[f"{name}.A"]
            if basis.shape[1] == 0:
                continue
            for tensor in (layer.lora_A.grad, optimizer.state[layer.lora_A]["exp_avg"]):
                if basis.shape[1] >= basis.shape[0]:  # the basis fills A's r dimensions: nothing may be left
                    assert tensor.norm() < 1e-6, (name, float(tensor.norm()))
                    continue
                leak = (basis.T @ tensor.detach().cpu()).norm() / tensor.norm().clamp_min(1e-12)
                assert leak < 1e-4, (name, float(leak))
            self.checked += 1
            self.checked_tasks.add(module.current_task)


@pytest.mark.slow
def test_gorp_config_runs_projects_and_keeps_its_subspaces_in_the_checkpoint(tmp_path, accelerator, fit_method_on_tiny):
    probe = OrthogonalInTaskOne()
    cli = fit_method_on_tiny("gorp", probe, tmp_path, accelerator, "--data.tasks", "[reviews, topics, intents]",
                             "--data.max_train_samples", "16")
    module, gorp = cli.model, cli.model.method_objects[0]
    assert module.method_name == "gorp" and sorted(module.adapters.snapshots) == [0, 1, 2]
    assert probe.checked > 0, "no layer had a non-empty subspace during tasks 1 and 2"
    # from the third task on the projection uses the basis grown by task 1's moments, not task 0's alone
    assert sorted(probe.dims) == [1, 2] and probe.dims[2] >= probe.dims[1] and 2 in probe.checked_tasks
    assert set(gorp.bases) == {f"{n}.A" for n in module.adapters.layers}
    assert all(b.shape[0] == module.lora_config.r for b in gorp.bases.values())
    # the subspaces travel in a real checkpoint file that loads with weights_only=True
    path = tmp_path / "after.ckpt"
    cli.trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    saved = checkpoint["nlora"]["methods"]["gorp"]["bases"]
    assert all(torch.equal(saved[k], gorp.bases[k]) for k in gorp.bases)
    resumed = type(module)(**{k: v for k, v in module.hparams.items() if not k.startswith("_")})
    resumed.on_load_checkpoint(checkpoint)
    assert all(torch.equal(resumed.method_objects[0].bases[k], gorp.bases[k]) for k in gorp.bases)
    assert (tmp_path / "gorp" / "cl_metrics.json").exists()
    header = (tmp_path / "gorp" / "metrics.csv").read_text().splitlines()[0]
    assert "train/grad/gorp/subspace_fraction" in header


def test_a_basis_that_fills_As_rank_is_warned_about_once_it_happens(caplog):
    module = fake_module()
    gorp = GORP(threshold=0.999)
    with caplog.at_level("WARNING", logger="nlora_lightning.methods.gorp"):
        gorp.on_task_end(module, 0, None)  # strictly below the threshold: the first basis leaves A some room
        assert all(gorp.bases[f"{n}.A"].shape[1] < 6 for n in ("q", "v")) and not caplog.records
        module._trainer.optimizers[0].state = {p: {"exp_avg": torch.randn(p.shape)} for p in module._trainer.optimizers[0].state}
        gorp.on_task_end(module, 1, None)
    assert all(gorp.bases[f"{n}.A"].shape[1] == 6 for n in ("q", "v"))  # r = 6 output dimensions, all covered
    (record,) = caplog.records
    assert "after task 1 the projection basis fills all 6 output dimensions of 2 matrices" in record.getMessage()
    assert "stop learning" in record.getMessage()

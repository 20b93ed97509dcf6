"""The extension point: registry, the module's single hooks, and transform state in the checkpoint."""

import pytest
import torch

from nlora_lightning.errors import CheckpointMismatchError, ConfigurationError
from nlora_lightning.gradients import GRADIENT_TRANSFORMS, GradientTransform, register_gradient_transform
from nlora_lightning.gradients.migu import MIGU


class TaskCounter(GradientTransform):
    """A stateful transform: halves the gradients and remembers which tasks ended."""

    def __init__(self, factor: float = 0.5):
        self.factor, self.ended = factor, []

    def apply(self, module):
        for layer in module.adapters.layers.values():
            layer.lora_B.grad.mul_(self.factor)
        return {"factor": self.factor}

    def on_task_end(self, module, stage):
        self.ended.append(stage)

    def state_dict(self):
        return {"ended": list(self.ended)}

    def load_state_dict(self, state):
        self.ended = list(state["ended"])


if "_test_counter" not in GRADIENT_TRANSFORMS:
    register_gradient_transform("_test_counter")(TaskCounter)


@pytest.mark.parametrize("config, message", [
    ([{"name": "migo"}], r"unknown gradient transform 'migo'; registered: \[.*'gorp', 'migu'"),
    ([{"name": "migu", "options": {"top": 0.3}}], r"gradient transform 'migu' has no option\(s\) \['top'\]; its options are"),
])
def test_unknown_transforms_and_options_are_refused_in_one_line(tiny, tiny_llama_init, config, message):
    with pytest.raises(ConfigurationError, match=message):
        tiny.module(tiny_llama_init, adapters="shared", gradient_transforms=config)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_gradient_transform("migu")(MIGU)


def test_module_builds_attaches_and_calls_the_task_end_hook(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init, gradient_transforms=[{"name": "migu"}, {"name": "_test_counter"}])
    migu, counter = module.gradient_transforms
    assert isinstance(migu, MIGU) and migu.top_ratio == 0.3 and isinstance(counter, TaskCounter)
    assert module.hparams["gradient_transforms"] == [{"name": "migu", "options": {}}, {"name": "_test_counter", "options": {}}]
    module.configure_model()
    assert all(layer.record_slot_magnitudes for layer in module.adapters.layers.values())
    module.finish_task(0)
    module.finish_task(0)  # already finished: the hook is not called twice
    assert counter.ended == [0]


def test_transform_state_travels_in_the_checkpoint(tiny, tiny_llama_init):
    config = [{"name": "_test_counter", "options": {"factor": 0.25}}]
    module = tiny.module(tiny_llama_init, gradient_transforms=config)
    module.configure_model()
    module.finish_task(0)
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["nlora"]["gradient_transforms"] == [{"ended": [0]}]
    resumed = tiny.module(tiny_llama_init, gradient_transforms=config)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.gradient_transforms[0].ended == [0]
    other = tiny.module(tiny_llama_init, gradient_transforms=[{"name": "_test_counter", "options": {"factor": 0.5}}])
    with pytest.raises(CheckpointMismatchError, match="gradient_transforms"):
        other.on_load_checkpoint(checkpoint)
    without = tiny.module(tiny_llama_init)  # resuming a run that had a transform without it is refused too
    with pytest.raises(CheckpointMismatchError, match="gradient_transforms: checkpoint .*_test_counter.* vs now None"):
        without.on_load_checkpoint(checkpoint)


def test_checkpoints_without_transforms_keep_their_identity(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init)
    assert "gradient_transforms" not in module.identity()  # checkpoints written before transforms existed still load


def test_on_before_optimizer_step_applies_transforms_in_order(tiny, tiny_llama_init, monkeypatch):
    module = tiny.module(tiny_llama_init, gradient_transforms=[{"name": "_test_counter"}])
    module.configure_model()
    layers = list(module.adapters.layers.values())
    for layer in layers:
        layer.lora_B.grad = torch.ones_like(layer.lora_B)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module.on_before_optimizer_step(optimizer=None)
    assert all(torch.equal(layer.lora_B.grad, torch.full_like(layer.lora_B, 0.5)) for layer in layers)
    assert logged == {"train/grad/_test_counter/factor": 0.5}

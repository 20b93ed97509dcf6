"""The extension point: registry, the module's calls of every hook, and method state in the checkpoint."""

import pytest
import torch

from nlora_lightning.errors import CheckpointMismatchError, ConfigurationError
from nlora_lightning.methods import METHODS, MIGU, Method, MethodConfig, register_method


class TaskCounter(Method):
    """A stateful method without a loss: halves the gradients and remembers which tasks ended."""

    adds_loss = False

    def __init__(self, factor: float = 0.5):
        self.factor, self.ended, self.attached = factor, [], False

    def attach(self, module):
        self.attached = True

    def before_optimizer_step(self, module):
        for layer in module.adapters.layers.values():
            layer.lora_B.grad.mul_(self.factor)
        return {"factor": self.factor}

    def on_task_end(self, module, stage, batches):
        self.ended.append(stage)

    def state_dict(self):
        return {"ended": list(self.ended)}

    def load_state_dict(self, state):
        self.ended = list(state["ended"])


if "_test_counter" not in METHODS:
    register_method("_test_counter")(TaskCounter)


@pytest.mark.parametrize("config, message", [
    ([{"name": "migo"}], r"unknown method 'migo'; registered: \[.*'gorp', .*'migu'"),
    ([{"name": "migu", "options": {"top": 0.3}}],
     r"method 'migu' has no option\(s\) \['top'\]; its options are: top_ratio: float = 0.3, skip_first_task: bool = True"),
    ([{"name": "migu", "options": {"top_ratio": 1.5}}], r"method 'migu': top_ratio must be a number in \(0, 1\]"),
    ([{"name": "migu"}, {"name": "migu"}], r"lists \['migu'\] more than once"),
])
def test_unknown_methods_and_options_are_refused_in_one_line(tiny, tiny_llama_init, config, message):
    with pytest.raises(ConfigurationError, match=message):
        tiny.module(tiny_llama_init, adapters="shared", methods=config)


def test_registering_a_name_twice_or_a_non_method_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_method("migu")(TaskCounter)
    with pytest.raises(TypeError, match="Method subclass"):
        register_method("not_a_method")(lambda layers: 0)


def test_adapter_modes_a_method_cannot_work_with_are_refused(tiny, tiny_llama_init):
    with pytest.raises(ConfigurationError, match=r"method 'ewc' works with adapters \['shared'\], not adapters='per_task'"):
        tiny.module(tiny_llama_init, methods=[MethodConfig("ewc", 1.0)])
    with pytest.raises(ConfigurationError, match=r"act on LoRA adapters; adapters='none' has none"):
        tiny.module(tiny_llama_init, adapters="none", methods=[{"name": "migu"}])


def test_module_builds_attaches_and_calls_the_task_end_hook(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init, methods=[{"name": "migu"}, {"name": "_test_counter"}])
    migu, counter = module.method_objects
    assert isinstance(migu, MIGU) and migu.top_ratio == 0.3 and isinstance(counter, TaskCounter)
    assert [m["name"] for m in module.hparams["methods"]] == ["migu", "_test_counter"]
    module.configure_model()
    assert counter.attached and len(migu._handles) == 2 * len(module.adapters.layers)  # MIGU's hooks on the taps
    module.finish_task(0)
    module.finish_task(0)  # already finished: the hook is not called twice
    assert counter.ended == [0]


def test_method_state_travels_in_the_checkpoint(tiny, tiny_llama_init):
    config = [{"name": "_test_counter", "options": {"factor": 0.25}}]
    module = tiny.module(tiny_llama_init, methods=config)
    module.configure_model()
    module.finish_task(0)
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["nlora"]["methods"] == {"_test_counter": {"ended": [0]}} and checkpoint["nlora"]["format"] == 2
    resumed = tiny.module(tiny_llama_init, methods=config)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.method_objects[0].ended == [0]
    other = tiny.module(tiny_llama_init, methods=[{"name": "_test_counter", "options": {"factor": 0.5}}])
    with pytest.raises(CheckpointMismatchError, match="methods"):
        other.on_load_checkpoint(checkpoint)
    without = tiny.module(tiny_llama_init)  # resuming a run that had a method without it is refused too
    with pytest.raises(CheckpointMismatchError, match=r"methods: checkpoint .*_test_counter.* vs now \[\]"):
        without.on_load_checkpoint(checkpoint)


def test_on_before_optimizer_step_calls_each_method_and_logs_its_values(tiny, tiny_llama_init, monkeypatch):
    module = tiny.module(tiny_llama_init, methods=[{"name": "_test_counter"}])
    module.configure_model()
    layers = list(module.adapters.layers.values())
    for layer in layers:
        layer.lora_B.grad = torch.ones_like(layer.lora_B)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module.on_before_optimizer_step(optimizer=None)
    assert all(torch.equal(layer.lora_B.grad, torch.full_like(layer.lora_B, 0.5)) for layer in layers)
    assert logged == {"train/grad/_test_counter/factor": 0.5}


def test_the_deprecated_lists_still_build_with_one_warning_each(tiny, tiny_llama_init, caplog):
    module = tiny.module(tiny_llama_init, regularizers=[{"name": "nlora_l1"}], regularizer_defaults={"nlora_l1/delta_w": {"weight": 0.3}},
                         gradient_transforms=[{"name": "gorp", "options": {"threshold": 0.8}}])
    assert [(m.name, m.weight, m.options) for m in module.methods] == [("nlora_l1", 0.3, {}), ("gorp", None, {"threshold": 0.8})]
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warnings) == 3 and all("\n" not in w for w in warnings)
    assert any("model.regularizers" in w for w in warnings) and any("model.gradient_transforms" in w for w in warnings)


def test_a_checkpoint_resumes_whether_an_entry_spells_out_a_default_option_or_not(tiny, tiny_llama_init):
    spelled = tiny.module(tiny_llama_init, methods=[{"name": "nlora_l1", "weight": 0.1, "options": {"mode": "delta_w"}}])
    spelled.configure_model()
    checkpoint = {}
    spelled.on_save_checkpoint(checkpoint)
    tiny.module(tiny_llama_init, methods=[{"name": "nlora_l1", "weight": 0.1}]).check_checkpoint(checkpoint)
    with pytest.raises(CheckpointMismatchError, match="methods"):
        tiny.module(tiny_llama_init, methods=[{"name": "nlora_l1", "weight": 0.1, "options": {"mode": "official"}}]).check_checkpoint(checkpoint)

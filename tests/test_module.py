import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from nlora_lightning import ContinualLightningModule, MethodConfig
from nlora_lightning.callbacks import ForgettingMetrics, FreezePreviousAdapters
from nlora_lightning.errors import ConfigurationError

NLORA = [MethodConfig("nlora_l1", weight=0.01)]


class CaptureAfterFirstTask(Callback):
    """Copies task 0's stored adapter and the frozen buffers right after the boundary."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.current_task == 1 and not hasattr(self, "snapshot"):
            self.snapshot = {k: v.clone() for k, v in pl_module.adapters.snapshots[0].B.items()}
            self.frozen = {n: l.frozen_B.clone() for n, l in pl_module.adapters.layers.items()}


@pytest.mark.slow
def test_two_task_fit_trains_only_the_current_adapter(tiny, tiny_llama_init, make_trainer, tmp_path):
    module = tiny.module(tiny_llama_init, methods=NLORA)
    data = tiny.data()
    capture = CaptureAfterFirstTask()
    trainer = make_trainer(callbacks=[capture])
    trainer.fit(module, datamodule=data)

    assert module.current_task == 1 and sorted(module.adapters.snapshots) == [0, 1]
    # earlier adapter bit-identical after training the next task (store and forward-pass buffers)
    for name, value in capture.snapshot.items():
        assert torch.equal(module.adapters.snapshots[0].B[name], value)
        assert torch.equal(module.adapters.layers[name].frozen_B[:, :2].cpu(), capture.frozen[name][:, :2].cpu())
    assert any(torch.count_nonzero(v) for v in capture.snapshot.values())  # task 0 did train
    # callbacks were added automatically and wrote the matrix
    assert any(isinstance(c, FreezePreviousAdapters) for c in trainer.callbacks)
    assert any(isinstance(c, ForgettingMetrics) for c in trainer.callbacks)
    metrics = json.loads((tmp_path / "run" / "cl_metrics.json").read_text())
    assert len(metrics["acc_matrix"]) == 2 and all(len(r) == 2 for r in metrics["acc_matrix"])


def test_gradients_reach_only_the_current_adapter(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init, methods=NLORA + [MethodConfig("olora_orthogonality", 0.5), MethodConfig("l2", 0.1)])
    module.configure_model()
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_()
    module.finish_task(0)
    module.start_task(1)
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_()
    ids = torch.randint(3, 200, (2, 12))
    labels = ids.clone()
    labels[:, :8] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    out = module.task_forward(batch)
    loss = out.loss
    for weight, value in module.method_losses(batch, out).values():
        loss = loss + weight * value
    loss.backward()
    with_grad = {n for n, p in module.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == module.adapters.slot_parameter_names(module.model)
    assert all(not b.requires_grad for n, b in module.model.named_buffers() if "frozen" in n)


def test_method_losses_use_per_task_lambdas(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init, methods=[MethodConfig("nlora_l1", 0.4, task_weights={"topics": 1.2})])
    module.configure_model()
    module._stage_task_name = lambda: "topics"
    assert module.method_losses({}, None)["nlora_l1"][0] == 1.2
    module._stage_task_name = lambda: "reviews"
    assert module.method_losses({}, None)["nlora_l1"][0] == 0.4


def test_state_dict_holds_only_the_trainable_adapter(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init)
    module.configure_model()
    keys = set(module.state_dict())
    assert keys and all(k.endswith(("lora_A", "lora_B")) for k in keys)
    full = tiny.module(tiny_llama_init, adapters="none")
    full.configure_model()
    assert len(full.state_dict()) > len(keys)


def test_official_mode_on_gqa_v_proj_is_refused(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init, methods=[MethodConfig("nlora_l1", 0.4, options={"mode": "official"})])
    with pytest.raises(ValueError, match=r"non-square layer model\.layers\.0\.self_attn\.v_proj"):
        module.configure_model()
    square = tiny.module(tiny_llama_init, methods=[MethodConfig("nlora_l1", 0.4, options={"mode": "official"})],
                         lora={"r": 2, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]})
    square.configure_model()
    assert "nlora_l1" in square.method_losses({}, None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"adapters": "none", "methods": NLORA}, "adapters='none' has none"),
        ({"methods": [MethodConfig("nope", 1.0)]}, "unknown method 'nope'"),
        ({"evaluation": {"oracle_task_adapter": True}, "consolidation": "merge"}, "oracle_task_adapter"),
        ({"adapters": "sometimes"}, "adapters must be"),
    ],
)
def test_incompatible_settings_fail_at_construction(tiny, tiny_llama_init, kwargs, message):
    with pytest.raises((ConfigurationError, ValueError), match=message):
        tiny.module(tiny_llama_init, **kwargs)


@pytest.mark.slow
def test_t5_sequence_fits_end_to_end(tiny, tiny_t5_init, make_trainer, tmp_path):
    module = tiny.module(tiny_t5_init, methods=NLORA, evaluation={"mode": "generate"})
    trainer = make_trainer(name="t5")
    trainer.fit(module, datamodule=tiny.data(max_train_samples=8, max_eval_samples=4))
    assert module.is_seq2seq and len(module.adapters.layers) == 12
    metrics = json.loads((tmp_path / "t5" / "cl_metrics.json").read_text())
    assert set(metrics) == {"tasks", "acc_matrix", "AA", "BWT", "forgetting", "FWT", "AA_ci95", "BWT_ci95", "bootstrap",
                            "AA_chance", "AA_majority", "never_learned", "baselines", "eval_schedule", "metric", "task_metrics",
                            "scoring", "retention"}


@pytest.mark.slow
@pytest.mark.parametrize("forward_transfer", [False, True])
def test_first_task_is_evaluated_with_and_without_forward_transfer(tiny, tiny_llama_init, make_trainer, tmp_path, forward_transfer):
    trainer = make_trainer(name=f"fwt{forward_transfer}", callbacks=[ForgettingMetrics(forward_transfer=forward_transfer)])
    trainer.fit(tiny.module(tiny_llama_init), datamodule=tiny.data())
    metrics = json.loads((tmp_path / f"fwt{forward_transfer}" / "cl_metrics.json").read_text())
    R = metrics["acc_matrix"]
    assert R[0][0] is not None and R[1][0] is not None and R[1][1] is not None
    assert (R[0][1] is not None) == forward_transfer  # the next task is evaluated early only for FWT
    assert (metrics["FWT"] is not None) == forward_transfer and metrics["BWT"] is not None


@pytest.mark.slow
def test_task_weights_must_name_sequence_tasks(tiny, tiny_llama_init, make_trainer):
    module = tiny.module(tiny_llama_init, methods=[MethodConfig("nlora_l1", 0.4, task_weights={"WiC": 1.2})])
    with pytest.raises(ConfigurationError, match=r"task_weights name task\(s\) \['WiC'\] not in the sequence \['reviews', 'topics'\]"):
        make_trainer().fit(module, datamodule=tiny.data())


@pytest.mark.slow
def test_held_out_tasks_are_evaluated_after_the_last_task_and_reported_apart(tiny, tiny_llama_init, make_trainer, tmp_path):
    trainer = make_trainer(name="heldout")
    trainer.fit(tiny.module(tiny_llama_init), datamodule=tiny.data(held_out_tasks=["intents"]))
    run = tmp_path / "heldout"
    metrics = json.loads((run / "cl_metrics.json").read_text())
    details = json.loads((run / "cl_details.json").read_text())
    assert metrics["tasks"] == ["reviews", "topics"] and len(metrics["acc_matrix"][0]) == 2  # not in the matrix
    assert set(details["held_out"]) == {"intents"} and 0.0 <= details["held_out"]["intents"] <= 1.0
    assert "intents" in (run / "report.md").read_text()


def test_the_module_follows_the_callbacks_sequence_settings_policy(tiny, tiny_llama_init, make_trainer):
    # One policy for every module: a max_epochs that does not fit the sequence is refused in one line.
    trainer = make_trainer(max_epochs=5)
    with pytest.raises(ConfigurationError, match=r"^ContinualLightningModule: Trainer\(max_epochs=5\) does not fit the task sequence of 2 stages \(2 epochs\)"):
        trainer.fit(tiny.module(tiny_llama_init), datamodule=tiny.data())

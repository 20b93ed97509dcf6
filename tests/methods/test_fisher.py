"""Fisher estimates against per-sample gradients taken the plain way, one sample at a time."""

import pytest
import torch

from nlora_lightning.data.collate import TrainCollator
from nlora_lightning.methods.fisher import slot_fisher, update_fisher


def _module(tiny, init):
    module = tiny.module(init, adapters="shared", lora={"r": 2, "alpha": 8, "dropout": 0.0})
    module.configure_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_(std=0.1)
    return module


def _examples():
    g = torch.Generator().manual_seed(1)
    return [{"prompt_ids": torch.randint(3, 200, (n,), generator=g).tolist(),
             "answer_ids": torch.randint(3, 200, (k,), generator=g).tolist(), "task": 0}
            for n, k in ((5, 2), (8, 3), (3, 1))]


def _close(actual, expected):
    # float32 sums in another order (padded batches): relative to the largest entry
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def _batch(examples):
    return TrainCollator(pad_token_id=0, decoder_only=True)(examples)


def _reference(module, examples, wrt):
    """Mean over samples of the squared gradient of each sample's own loss (batch of one, no padding)."""
    module.model.eval()
    total = None
    for example in examples:
        grads = wrt(module.task_forward(_batch([example])).loss)
        squares = {k: g.detach().square() / len(examples) for k, g in grads.items()}
        total = squares if total is None else {k: total[k] + squares[k] for k in total}
    return total


def _weight_gradients(module):
    # dL/dDelta W is the gradient of the effective weight: read it from the base weight (made trainable meanwhile)
    weights = {n: l.base_layer.weight for n, l in module.adapters.layers.items()}
    for w in weights.values():
        w.requires_grad_(True)
    return lambda loss: dict(zip(weights, torch.autograd.grad(loss, list(weights.values()))))


def _slot_gradients(module):
    params = {f"{n}.{k}": getattr(l, f"lora_{k}") for n, l in module.adapters.layers.items() for k in "AB"}
    return lambda loss: dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_update_fisher_is_the_mean_squared_per_sample_weight_gradient(tiny, tiny_llama_init, batch_size):
    module = _module(tiny, tiny_llama_init)
    examples = _examples()
    batches = [_batch(examples[i : i + batch_size]) for i in range(0, 3, batch_size)]  # padded when batch_size > 1
    fisher = update_fisher(module, batches)
    expected = _reference(module, examples, _weight_gradients(module))
    for name in module.adapters.layers:
        _close(fisher[name], expected[name])
    assert all(v.sum() > 0 for v in fisher.values())


def test_slot_fisher_is_the_mean_squared_per_sample_factor_gradient(tiny, tiny_llama_init):
    module = _module(tiny, tiny_llama_init)
    examples = _examples()
    fisher = slot_fisher(module, [_batch(examples)])
    expected = _reference(module, examples, _slot_gradients(module))
    assert set(fisher) == set(expected)
    for key in expected:
        _close(fisher[key], expected[key])


def test_batch_mean_form_squares_the_batch_gradient(tiny, tiny_llama_init):
    # per_sample=False, the EWC-LoRA release's form: sum_b |b| g_b^2 / N with g_b the batch's mean gradient
    module = _module(tiny, tiny_llama_init)
    batch = _batch(_examples())
    fisher = slot_fisher(module, [batch], per_sample=False)
    module.model.eval()
    grads = _slot_gradients(module)(module.task_forward(batch).loss)
    for key, grad in grads.items():
        _close(fisher[key], grad.square())


def test_estimates_leave_gradients_and_mode_alone(tiny, tiny_llama_init):
    module = _module(tiny, tiny_llama_init)
    module.model.train()
    update_fisher(module, [_batch(_examples()[:1])])
    assert module.model.training
    assert all(p.grad is None for p in module.adapters.slot_parameters())
    with pytest.raises(ValueError, match="at least one training sample"):
        update_fisher(module, [])


def test_per_sample_fisher_on_a_seq2seq_model(tiny, tiny_t5_init):
    module = tiny.module(tiny_t5_init, adapters="shared", lora={"r": 2, "alpha": 8, "dropout": 0.0})
    module.configure_model()
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_(std=0.1, generator=torch.Generator().manual_seed(3))
    examples = _examples()
    collate = TrainCollator(pad_token_id=0, decoder_only=False)
    fisher = update_fisher(module, [collate(examples)])
    weights = {n: l.base_layer.weight for n, l in module.adapters.layers.items()}
    for w in weights.values():
        w.requires_grad_(True)
    module.model.eval()
    expected = {n: torch.zeros_like(w) for n, w in weights.items()}
    for example in examples:
        grads = torch.autograd.grad(module.task_forward(collate([example])).loss, list(weights.values()))
        for n, g in zip(weights, grads):
            expected[n] += g.square() / len(examples)
    for n in weights:
        _close(fisher[n], expected[n])

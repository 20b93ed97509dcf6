"""Fisher estimates against per-sample gradients taken the plain way (backward into .grad)."""

import torch

from nlora_lightning.losses.fisher import parameter_fisher, update_fisher


def _module(tiny, init):
    module = tiny.module(init, adapters="shared", lora={"r": 2, "alpha": 8, "dropout": 0.0})
    module.configure_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_(std=0.1)
    return module


def _samples(n=3):
    g = torch.Generator().manual_seed(1)
    batches = []
    for length in (7, 9, 6)[:n]:
        ids = torch.randint(3, 200, (1, length), generator=g)
        labels = ids.clone()
        labels[:, : length - 3] = -100
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


def test_update_fisher_equals_mean_squared_weight_gradient(tiny, tiny_llama_init):
    module = _module(tiny, tiny_llama_init)
    samples = _samples()
    fisher = update_fisher(module, samples)
    # independent reference: dL/dDelta W is the gradient of the (effective) weight; read it from the frozen base
    layers = module.adapters.layers
    expected = {n: torch.zeros(l.out_features, l.in_features) for n, l in layers.items()}
    module.model.eval()
    for batch in samples:
        for layer in layers.values():
            layer.base_layer.weight.requires_grad_(True)
            layer.base_layer.weight.grad = None
        module._task_loss(batch).backward()
        for n, layer in layers.items():
            expected[n] += layer.base_layer.weight.grad.square() / len(samples)
            layer.base_layer.weight.requires_grad_(False)
    for n in layers:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-10)
    assert all(v.sum() > 0 for v in fisher.values())


def test_update_fisher_leaves_gradients_and_mode_alone(tiny, tiny_llama_init):
    module = _module(tiny, tiny_llama_init)
    module.model.train()
    update_fisher(module, _samples(1))
    assert module.model.training
    assert all(p.grad is None for p in module.adapters.slot_parameters())


def test_parameter_fisher_equals_mean_squared_parameter_gradient(tiny, tiny_llama_init):
    module = _module(tiny, tiny_llama_init)
    samples = _samples()
    params = {f"{n}.A": l.lora_A for n, l in module.adapters.layers.items()}
    params.update({f"{n}.B": l.lora_B for n, l in module.adapters.layers.items()})
    fisher = parameter_fisher(module, samples, params)
    module.model.eval()
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in samples:
        grads = torch.autograd.grad(module._task_loss(batch), list(params.values()))
        for n, g in zip(params, grads):
            expected[n] += g.square() / len(samples)
    for n in params:
        torch.testing.assert_close(fisher[n], expected[n])


def test_fisher_of_batches_weights_squared_batch_gradients_by_size(tiny, tiny_llama_init):
    # fisher_batch_size > 1: the release's form, sum_b |b| g_b^2 / N with g_b the batch-mean gradient
    module = _module(tiny, tiny_llama_init)
    ids = torch.randint(3, 200, (2, 8), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :5] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    params = {"B": next(iter(module.adapters.layers.values())).lora_B}
    fisher = parameter_fisher(module, [batch], params)
    module.model.eval()
    (g,) = torch.autograd.grad(module._task_loss(batch), [params["B"]])
    torch.testing.assert_close(fisher["B"], g.square())

"""LwF: answer rows, the teacher (earlier adapters only), zero at the first task, gradients to the slot only."""

import torch

from nlora_lightning import MethodConfig
from nlora_lightning.models.forward import answer_positions, task_forward
from nlora_lightning.regularizers import functional as F


def _batch():
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, :7] = -100
    labels[1, :5] = -100
    labels[1, 9] = -100  # padding at the end
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_answer_positions_pick_the_rows_that_predict_labels():
    batch = _batch()
    logits = torch.randn(2, 10, 5)
    rows = [logits[b, i] for b in range(2) for i in range(9) if batch["labels"][b, i + 1] != -100]
    mask, _ = answer_positions(batch["labels"], seq2seq=False)
    torch.testing.assert_close(logits[:, :-1][mask], torch.stack(rows))
    seq2seq = [logits[b, i] for b in range(2) for i in range(10) if batch["labels"][b, i] != -100]
    mask, _ = answer_positions(batch["labels"], seq2seq=True)
    torch.testing.assert_close(logits[mask], torch.stack(seq2seq))


def test_task_forward_gives_the_same_answer_logits_with_and_without_the_answer_only_head(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init)
    module.configure_model()
    fast = task_forward(module.model, _batch(), seq2seq=False, answer_only=True)
    full = task_forward(module.model, _batch(), seq2seq=False, answer_only=False)
    torch.testing.assert_close(fast.logits, full.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.loss, full.loss, rtol=1e-5, atol=1e-6)
    assert fast.samples.tolist() == [0, 0, 0, 1, 1, 1, 1] and fast.logits.shape[0] == 7


def _at_second_task(tiny, init, answer_only=True):
    module = tiny.module(init, methods=[MethodConfig("lwf", 1.0)], answer_only_logits=answer_only)
    module.configure_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_(std=0.5)
    module.finish_task(0)
    module.start_task(1)
    return module


def _step(module, batch):
    return module.method_objects[0].loss(module, batch, module.task_forward(batch))


def test_lwf_is_zero_at_the_first_task(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init, methods=[MethodConfig("lwf", 1.0)])
    module.configure_model()
    assert _step(module, _batch()).item() == 0.0


def test_lwf_is_zero_until_the_new_adapter_moves(tiny, tiny_llama_init):
    module = _at_second_task(tiny, tiny_llama_init)  # fresh slot: B = 0, the student is the teacher
    assert _step(module, _batch()).item() < 1e-6


def test_lwf_distils_the_earlier_adapters_only_model(tiny, tiny_llama_init):
    for answer_only in (True, False):
        module = _at_second_task(tiny, tiny_llama_init, answer_only)
        with torch.no_grad():
            for layer in module.adapters.layers.values():
                layer.lora_B.normal_(std=0.5)
        batch = _batch()
        module.model.train()
        value = _step(module, batch)
        assert module.model.training and all(l.slot_enabled for l in module.adapters.layers.values())
        # naive: two full forwards, old = slot off, softened KL on answer positions
        labels = batch["labels"]
        new = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        module.adapters.set_slot_enabled(False)
        with torch.no_grad():
            old = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        module.adapters.set_slot_enabled(True)
        mask = labels[:, 1:] != -100
        p = torch.softmax(old[:, :-1][mask] / 2.0, -1)
        q = torch.log_softmax(new[:, :-1][mask] / 2.0, -1)
        naive = (p * (p.log() - q)).sum(-1).mean()
        torch.testing.assert_close(value, naive, rtol=1e-4, atol=1e-6)
        assert value.item() > 0
        value.backward()
        with_grad = {n for n, p in module.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert with_grad == module.adapters.slot_parameter_names(module.model)
        assert torch.isclose(F.distillation_kl(new[:, :-1][mask], old[:, :-1][mask]), naive, rtol=1e-4)


def test_lwf_on_a_seq2seq_model(tiny, tiny_t5_init):
    module = _at_second_task(tiny, tiny_t5_init)
    with torch.no_grad():
        for layer in module.adapters.layers.values():
            layer.lora_B.normal_(std=0.5)
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(4))
    labels = torch.randint(3, 200, (2, 4), generator=torch.Generator().manual_seed(5))
    labels[1, 3] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    module.model.eval()  # T5 has dropout in the base: compare without it
    value = _step(module, batch)
    new = module.model(**batch).logits
    module.adapters.set_slot_enabled(False)
    with torch.no_grad():
        old = module.model(**batch).logits
    module.adapters.set_slot_enabled(True)
    mask = labels != -100
    torch.testing.assert_close(value, F.distillation_kl(new[mask], old[mask]), rtol=1e-4, atol=1e-6)
    assert value.item() > 0

"""benchmarks/flops.py: the hand-derived matmul counts, by hand on a tiny shape and against torch's FLOP counter."""

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.flops import AdapterShape, DecoderShape, generation_flops, matmul_peak_flops, training_step_flops  # noqa: E402
from nlora_lightning import ContinualLightningModule, LoRAConfig  # noqa: E402
from nlora_lightning.models import forward as fwd  # noqa: E402

TINY = DecoderShape(hidden=4, intermediate=8, layers=1, heads=2, kv_heads=1, head_dim=2, vocab=10)


def test_training_step_by_hand():
    # Per token: q 4x4 + k 4x2 + v 4x2 + o 4x4 + gate, up 4x8 + down 8x4 = 144 multiply-adds; 3 tokens.
    parts = training_step_flops(TINY, AdapterShape(("q_proj",), r=1), rows=1, length=3, logit_positions=1)
    assert parts["base_forward"] == 2 * (3 * 144 + 4 * 10)  # + LM head at one position
    assert parts["activation_backward"] == 2 * (3 * (144 - 32) + 4 * 10)  # first layer q, k, v: no input gradient
    assert parts["attention"] == 2 * 6 * (2 * 2 * 3 * 3)  # 2 products forward, 4 backward, heads x head_dim x L x L
    assert parts["slot_forward"] == 2 * 3 * (4 + 4)  # x A^T (r d_in) and h B^T (d_out r)
    assert parts["slot_backward"] == 2 * 3 * (4 + 4 + 4)  # dB, dh, dA; no dx (input is the embeddings)
    assert parts["frozen_adapters"] == 0
    assert parts["total"] == 2 * (472 + 376 + 216 + 24 + 36)
    factors = training_step_flops(TINY, AdapterShape(("q_proj",), r=1, frozen_rank=3, frozen_form="factors"), 1, 3, 1)
    assert factors["frozen_adapters"] == 2 * 3 * 3 * (4 + 4)  # forward only: rank 3, 3 tokens
    dense = training_step_flops(TINY, AdapterShape(("q_proj",), r=1, frozen_rank=3, frozen_form="dense"), 1, 3, 1)
    assert dense["frozen_adapters"] == 2 * 3 * 16
    assert training_step_flops(TINY, AdapterShape(("q_proj",), r=1, frozen_rank=3, frozen_form="folded"), 1, 3, 1)["frozen_adapters"] == 0


def test_generation_by_hand():
    parts = generation_flops(TINY, AdapterShape(("q_proj",), r=1), rows=1, prompt_length=3, new_tokens=3)
    per_token = 144 + 8  # base + slot
    assert parts["prompt_pass"] == 2 * (3 * per_token + 2 * 2 * 2 * 3 * 3 + 40)
    assert parts["decode_steps"] == 2 * ((per_token + 2 * 2 * 2 * 4 + 40) + (per_token + 2 * 2 * 2 * 5 + 40))
    assert parts["total"] == parts["prompt_pass"] + parts["decode_steps"]


TINY_INIT = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, "vocab_size": 300}


def module_with_tasks(frozen_tasks: int, frozen_form: str):
    module = ContinualLightningModule(random_init=TINY_INIT, tokenizer="byte", lora=LoRAConfig(r=2, alpha=4, dropout=0.0))
    module.configure_model()
    module.adapters.frozen_form = frozen_form
    for task in range(frozen_tasks):
        module.finish_task(task)
        module.start_task(task + 1)
    return module


@pytest.mark.parametrize("frozen_tasks,frozen_form,cost", [(0, "auto", "none"), (3, "factors", "factors"), (9, "dense", "folded")])
def test_counts_match_torch_flop_counter(frozen_tasks, frozen_form, cost):
    # torch's counter sees every aten matmul but not the CPU attention kernel: compare all but attention.
    module = module_with_tasks(frozen_tasks, frozen_form)
    shape = DecoderShape.from_config(module.model.config)
    adapters = AdapterShape(("q_proj", "v_proj"), 2, 2 * frozen_tasks, cost)
    ids = torch.randint(3, 200, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 5:7] = ids[:, 5:7]
    with FlopCounterMode(display=False) as counter:
        module.task_forward({"input_ids": ids, "attention_mask": mask, "labels": labels}).loss.backward()
    parts = training_step_flops(shape, adapters, 3, 10, logit_positions=int((labels[:, 1:] != -100).sum()))
    assert counter.get_total_flops() == parts["total"] - parts["attention"]
    module.model.eval()
    prompts = torch.randint(3, 200, (2, 6), generator=torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as counter:
        fwd.generate_answers(module.model, module.tokenizer, prompts, torch.ones_like(prompts), 4, False)
    expected = generation_flops(shape, adapters, 2, 6, 4)
    attention = 2 * 2 * 2 * 2 * 4 * 8 * (36 + 7 + 8 + 9)  # FLOPs x layers x 2 products x rows x heads x head_dim x keys
    assert counter.get_total_flops() == expected["total"] - attention


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak_flops(torch.device("cpu"), size=64, repeats=2) > 0

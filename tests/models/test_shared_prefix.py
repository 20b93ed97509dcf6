"""The shared-prefix prompt pass against the plain left-padded pass, on a tiny random LLaMA."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from nlora_lightning.models import byte_tokenizer
from nlora_lightning.models.loading import random_init_config
from nlora_lightning.models.shared_prefix import prompt_pass, shared_prefix_length

HEAD = "Task:TC\nDataset:dbpedia\nWhat is the topic? Option: Company, Artist, Film \n"


@pytest.fixture
def llama(tiny_llama_init):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(random_init_config(tiny_llama_init, tok)).eval(), tok


def left_padded(rows, pad=0):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask


def common_prefix(rows):
    """Longest common prefix of python lists, capped at the shortest row minus one: the definition, by hand."""
    n = 0
    while n < min(map(len, rows)) - 1 and all(row[n] == rows[0][n] for row in rows):
        n += 1
    return n


def test_shared_prefix_length_matches_a_direct_count_on_random_rows():
    rng = random.Random(0)
    for _ in range(200):
        head = [rng.randrange(1, 4) for _ in range(rng.randrange(0, 6))]
        rows = [head + [rng.randrange(1, 4) for _ in range(rng.randrange(0, 5))] for _ in range(rng.randrange(1, 5))]
        rows = [row or [1] for row in rows]
        ids, mask = left_padded(rows)
        assert shared_prefix_length(ids, mask) == common_prefix(rows), rows


def test_shared_prefix_length_of_edge_cases():
    assert shared_prefix_length(*left_padded([[5, 6, 7]])) == 2  # one row: all but its last token
    assert shared_prefix_length(*left_padded([[5, 6], [5]])) == 0  # the shortest row keeps its one token
    assert shared_prefix_length(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long)) == 0


def _calls(model):
    shapes = []
    handle = model.model.register_forward_pre_hook(lambda _, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                                   with_kwargs=True)
    return shapes, handle


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_prompt_pass_gives_the_plain_pass_next_token_logits_and_cache(llama, attention):
    model, tok = llama
    model.set_attn_implementation(attention)
    sentences = ["Apple Inc. makes phones.", "A painter.", "x", "A very long film description that goes on"]
    rows = [tok.encode(HEAD + s + "\nAnswer:") for s in sentences]
    ids, mask = left_padded(rows, tok.pad_token_id)
    shared = common_prefix(rows)
    assert shared >= len(tok.encode(HEAD)) - 1
    shapes, handle = _calls(model)
    with torch.no_grad():
        out, key_mask = prompt_pass(lambda **kw: model(**kw), ids, mask)
        plain, plain_mask = prompt_pass(lambda **kw: model(**kw), ids, mask, min_shared=10_000)
    handle.remove()
    assert shapes[:2] == [(1, shared), (len(rows), ids.shape[1] - shared)]  # the prefix ran once
    assert shapes[2] == tuple(ids.shape) and torch.equal(plain_mask, mask)
    torch.testing.assert_close(out.logits[:, -1], plain.logits[:, -1], rtol=1e-4, atol=1e-5)
    assert torch.equal(key_mask.sum(-1), mask.sum(-1))
    # One more token through each cache: the same logits, so decoding continues alike.
    nxt = plain.logits[:, -1].argmax(-1)[:, None]
    lengths = mask.sum(-1, keepdim=True)
    with torch.no_grad():
        a = model(input_ids=nxt, attention_mask=torch.cat([key_mask, key_mask.new_ones(len(rows), 1)], -1),
                  position_ids=lengths, cache=out.cache, use_cache=True)
        b = model(input_ids=nxt, attention_mask=torch.cat([mask, mask.new_ones(len(rows), 1)], -1),
                  position_ids=lengths, cache=plain.cache, use_cache=True)
    torch.testing.assert_close(a.logits[:, -1], b.logits[:, -1], rtol=1e-4, atol=1e-5)


def test_prompt_pass_without_a_shared_prefix_is_one_plain_call(llama):
    model, tok = llama
    ids, mask = left_padded([tok.encode("Q1\nAnswer:"), tok.encode("A question\nAnswer:")], tok.pad_token_id)
    shapes, handle = _calls(model)
    with torch.no_grad():
        _, key_mask = prompt_pass(lambda **kw: model(**kw), ids, mask)
    handle.remove()
    assert shapes == [tuple(ids.shape)] and torch.equal(key_mask, mask)


def test_attention_without_gapped_masks_runs_the_plain_pass(llama, monkeypatch):
    from nlora_lightning.models import forward as fwd
    from nlora_lightning.models import generation
    from nlora_lightning.models.shared_prefix import can_share_prefix

    model, tok = llama
    assert can_share_prefix(model)
    model.config._attn_implementation = "flash_attention_2"  # only what the check reads; nothing runs with it
    assert not can_share_prefix(model)
    model.config._attn_implementation = "sdpa"
    rows = [tok.encode(HEAD + s + "\nAnswer:") for s in ("one", "two words")]
    ids, mask = left_padded(rows, tok.pad_token_id)
    for share in (True, False):  # greedy decoding and label ranking both ask the model
        monkeypatch.setattr(generation, "can_share_prefix", lambda m: share)
        monkeypatch.setattr(fwd, "can_share_prefix", lambda m: share)
        shapes, handle = _calls(model)
        generation.greedy_decode(model, ids, mask, 1, tok.eos_token_id)
        with torch.no_grad():
            fwd._rank_decoder_only(model, rows, [tok.encode(" a") + [1]], tok.pad_token_id, torch.device("cpu"))
        handle.remove()
        if share:  # each prompt pass is two calls, the first on the prefix alone
            assert shapes[0] == shapes[2] == (1, common_prefix(rows)), shapes
        else:
            assert shapes[0] == shapes[1] == tuple(ids.shape), shapes

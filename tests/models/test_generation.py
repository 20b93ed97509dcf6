import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from nlora_lightning.models import byte_tokenizer
from nlora_lightning.models.generation import generate_answers, greedy_decode, length_groups, plain_greedy
from nlora_lightning.models.loading import random_init_config

NEW_TOKENS = 12


@pytest.fixture
def llama(tiny_llama_init):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(random_init_config(tiny_llama_init, tok)).eval(), tok


def left_padded(tok, texts):
    prompts = [tok.encode(t) for t in texts]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tok.pad_token_id)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


def hf_greedy(model, ids, mask, eos, pad, new_tokens=NEW_TOKENS):
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new_tokens, eos_token_id=eos, pad_token_id=pad)
    rows = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1]:].tolist()
    out = []
    for row in rows:
        out.append(row[: row.index(eos) + 1] if eos in row else row)
    return out


def an_eos_that_ends_rows_at_different_steps(model, ids, mask, pad):
    """A token the model emits in several rows at different steps: as EOS, rows leave the batch one by one."""
    free = hf_greedy(model, ids, mask, eos=None, pad=pad)
    first_step = {}
    for row in free:
        for step, token in enumerate(row):
            first_step.setdefault(token, []).append(step) if row.index(token) == step else None
    spread = {t: s for t, s in first_step.items() if len(s) >= 2 and len(set(s)) >= 2 and max(s) < NEW_TOKENS - 1}
    assert spread, "the fixture model must emit some token in two rows at different steps"
    return max(spread, key=lambda t: (len(spread[t]), len(set(spread[t]))))


TEXTS = ["Task: a long prompt with several words\nAnswer:", "x\nAnswer:", "medium prompt\nAnswer:",
         "Task: another\nAnswer:", "q\nA:", "the quick brown fox jumps\nAnswer:"]


def test_greedy_decode_equals_generate_when_rows_finish_at_different_steps(llama):
    model, tok = llama
    ids, mask = left_padded(tok, TEXTS)
    eos = an_eos_that_ends_rows_at_different_steps(model, ids, mask, tok.pad_token_id)
    expected = hf_greedy(model, ids, mask, eos, tok.pad_token_id)
    ends = [len(row) for row in expected if row and row[-1] == eos]
    assert len(set(ends)) >= 2  # the case under test: rows leave the batch at different steps
    assert greedy_decode(model, ids, mask, NEW_TOKENS, eos) == expected


HEAD = "Task:TC\nDataset:dbpedia\nWhat is the topic of the paragraph? Option: Company, Artist, Film \n"


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_greedy_decode_equals_generate_when_the_prompts_share_a_prefix(llama, attention):
    # The prefix runs once (models/shared_prefix.py); the tokens must still be generate's.
    model, tok = llama
    model.set_attn_implementation(attention)
    ids, mask = left_padded(tok, [HEAD + text for text in TEXTS])
    eos = an_eos_that_ends_rows_at_different_steps(model, ids, mask, tok.pad_token_id)
    calls = []
    handle = model.model.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape[0]),
                                                   with_kwargs=True)
    tokens = greedy_decode(model, ids, mask, NEW_TOKENS, eos)
    handle.remove()
    assert calls[0] == 1  # the shared prefix was run once, for the whole batch
    expected = hf_greedy(model, ids, mask, eos, tok.pad_token_id)
    assert len({len(row) for row in expected if row and row[-1] == eos}) >= 2
    assert tokens == expected


def test_greedy_decode_equals_generate_with_adapters(tiny, tiny_llama_init):
    module = tiny.module(tiny_llama_init)
    module.configure_model()
    torch.manual_seed(1)
    for p in module.model.parameters():  # nonzero LoRA factors: the adapters change the answer
        if p.requires_grad:
            p.data.normal_(0, 0.5)
    model, tok = module.model.eval(), module.tokenizer
    ids, mask = left_padded(tok, TEXTS)
    eos = an_eos_that_ends_rows_at_different_steps(model, ids, mask, tok.pad_token_id)
    assert greedy_decode(model, ids, mask, NEW_TOKENS, eos) == hf_greedy(model, ids, mask, eos, tok.pad_token_id)


def test_generate_answers_decodes_the_greedy_tokens(llama):
    model, tok = llama
    ids, mask = left_padded(tok, TEXTS)
    expected = tok.batch_decode(hf_greedy(model, ids, mask, tok.eos_token_id, tok.pad_token_id), skip_special_tokens=True)
    assert generate_answers(model, tok, ids, mask, NEW_TOKENS, is_seq2seq=False) == expected


def test_settings_that_alter_greedy_choices_use_generate(llama):
    model, tok = llama
    assert plain_greedy(GenerationConfig())
    assert not plain_greedy(GenerationConfig(no_repeat_ngram_size=2))
    ids, mask = left_padded(tok, TEXTS)
    plain = generate_answers(model, tok, ids, mask, NEW_TOKENS, is_seq2seq=False)
    model.generation_config.no_repeat_ngram_size = 1  # honoured only by model.generate
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, no_repeat_ngram_size=1,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    expected = tok.batch_decode(model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1]:],
                                skip_special_tokens=True)
    assert expected != plain  # the setting changes the answers of this model
    assert generate_answers(model, tok, ids, mask, NEW_TOKENS, is_seq2seq=False) == expected


def test_zero_new_tokens_and_empty_batches(llama):
    model, tok = llama
    ids, mask = left_padded(tok, TEXTS[:2])
    assert greedy_decode(model, ids, mask, 0, tok.eos_token_id) == [[], []]
    assert greedy_decode(model, ids[:0], mask[:0], 5, tok.eos_token_id) == []


def brute_force_cost(lengths, new_tokens, step_tokens, shared=0):
    """The cheapest split of the longest-first rows into contiguous groups, by trying every split."""
    import itertools

    order = sorted(lengths, reverse=True)
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=max(0, len(order) - 1)):
        groups, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                groups.append(order[start:i])
                start = i
        groups.append(order[start:])
        best = min(best, sum(shared + len(g) * (g[0] - shared) + new_tokens * step_tokens for g in groups))
    return best


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("new_tokens,step_tokens,shared", [(1, 0, 0), (1, 8, 0), (4, 16, 0), (50, 64, 0), (1, 0, 30), (4, 16, 60)])
def test_length_groups_is_the_cheapest_split_and_covers_every_row(seed, new_tokens, step_tokens, shared):
    import random

    lengths = [random.Random(seed * 10 + i).randint(1, 120) for i in range(7)]
    lengths = [length + shared for length in lengths]
    groups = length_groups(lengths, new_tokens, step_tokens, shared)
    assert sorted(i for g in groups for i in g) == list(range(7))
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(lengths, reverse=True)  # contiguous runs of the longest-first order
    cost = sum(shared + len(g) * (lengths[g[0]] - shared) + new_tokens * step_tokens for g in groups)
    assert cost == brute_force_cost(lengths, new_tokens, step_tokens, shared)


def test_generate_answers_in_length_groups_equals_one_batch_of_generate(llama, monkeypatch):
    from nlora_lightning.models import generation

    model, tok = llama
    ids, mask = left_padded(tok, TEXTS)
    monkeypatch.setattr(generation, "DECODE_STEP_TOKENS", 0)  # every distinct length its own group
    assert len(generation.length_groups(mask.sum(-1).tolist(), NEW_TOKENS, 0)) == len(set(map(len, TEXTS)))
    expected = tok.batch_decode(hf_greedy(model, ids, mask, tok.eos_token_id, tok.pad_token_id), skip_special_tokens=True)
    assert generation.generate_answers(model, tok, ids, mask, NEW_TOKENS, is_seq2seq=False) == expected

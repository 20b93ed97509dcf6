import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from nlora_lightning.models import byte_tokenizer
from nlora_lightning.models import forward as F
from nlora_lightning.models.loading import random_init_config


@pytest.fixture
def llama(tiny_llama_init):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(random_init_config(tiny_llama_init, tok)).eval(), tok


def batch(tok):
    prompts = [tok.encode("Task: x\nAnswer:"), tok.encode("Hi\nAnswer:")]
    answers = [tok.encode(" yes") + [tok.eos_token_id], tok.encode(" no") + [tok.eos_token_id]]
    seqs = [p + a for p, a in zip(prompts, answers)]
    width = max(map(len, seqs))
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros(2, width, dtype=torch.long)
    labels = torch.full((2, width), -100)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        mask[i, : len(p) + len(a)] = 1
        labels[i, len(p) : len(p) + len(a)] = torch.tensor(a)
    return ids, mask, labels


def test_answer_only_loss_equals_full_vocabulary_loss(llama):
    model, tok = llama
    ids, mask, labels = batch(tok)
    assert F.supports_answer_only(model)
    fast = F.causal_lm_loss(model, ids, mask, labels, answer_only=True)
    full = F.causal_lm_loss(model, ids, mask, labels, answer_only=False)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)


def test_answer_only_gradients_equal_full(llama):
    model, tok = llama
    ids, mask, labels = batch(tok)
    head = model.get_output_embeddings().weight
    F.causal_lm_loss(model, ids, mask, labels, answer_only=True).backward()
    fast = head.grad.clone()
    model.zero_grad()
    F.causal_lm_loss(model, ids, mask, labels, answer_only=False).backward()
    torch.testing.assert_close(fast, head.grad, rtol=1e-4, atol=1e-6)


def test_left_padded_generation_equals_one_by_one(llama):
    model, tok = llama
    prompts = [tok.encode("abc def\nAnswer:"), tok.encode("x\nAnswer:")]
    width = max(map(len, prompts))
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    together = F.generate_answers(model, tok, ids, mask, 4, is_seq2seq=False)
    alone = [F.generate_answers(model, tok, torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long), 4, False)[0] for p in prompts]
    assert together == alone


def test_rank_answers_picks_the_likeliest_candidate(llama):
    model, tok = llama
    prompts = [tok.encode("Q1\nAnswer:"), tok.encode("Q2 longer\nAnswer:")]
    candidates = [tok.encode(" yes") + [tok.eos_token_id], tok.encode(" no") + [tok.eos_token_id]]
    best = F.rank_answers(model, prompts, candidates, tok.pad_token_id, is_seq2seq=False)
    # brute force: full sequence log-likelihood of each candidate
    for i, p in enumerate(prompts):
        scores = []
        for c in candidates:
            ids = torch.tensor([p + c])
            logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
            scores.append(sum(logp[len(p) - 1 + k, t] for k, t in enumerate(c)))
        assert int(best[i]) == int(torch.stack(scores).argmax())


def test_seq2seq_rank_and_generate(tiny_t5_init):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(random_init_config(tiny_t5_init, tok)).eval()
    prompts = [tok.encode("Q1") + [tok.eos_token_id], tok.encode("Q22") + [tok.eos_token_id]]
    candidates = [tok.encode("yes") + [tok.eos_token_id], tok.encode("no") + [tok.eos_token_id]]
    best = F.rank_answers(model, prompts, candidates, tok.pad_token_id, is_seq2seq=True)
    assert best.shape == (2,)
    ids = torch.tensor([prompts[0] + [tok.pad_token_id], prompts[1]])
    answers = F.generate_answers(model, tok, ids, ids.ne(tok.pad_token_id).long(), 3, is_seq2seq=True)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_shared_prefix_scores_equal_full_sequence_scores(llama):
    model, tok = llama
    prompts = [tok.encode("Q1\nAnswer:"), tok.encode("A much longer question\nAnswer:"), tok.encode("x:")]
    candidates = [tok.encode(" yes") + [1], tok.encode(" no") + [1], tok.encode(" maybe so") + [1], [1]]
    shared = F._rank_decoder_only(model, prompts, candidates, tok.pad_token_id, torch.device("cpu"))
    full = F._rank_full_sequences(model, prompts, candidates, tok.pad_token_id, torch.device("cpu"))
    torch.testing.assert_close(shared, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("attention", "head_chunk"), [("sdpa", None), ("eager", 1)])
def test_packed_candidates_score_like_one_by_one_and_full_sequences(llama, monkeypatch, attention, head_chunk):
    # Every candidate in one pass (block-diagonal mask over the shared prompt cache) against the same
    # candidates continued one at a time and against full prompt + candidate sequences without a cache.
    model, tok = llama
    model.set_attn_implementation(attention)
    if head_chunk is not None:  # the LM head over the packed tokens in many small pieces
        monkeypatch.setattr(F, "_HEAD_CHUNK_ELEMENTS", head_chunk)
    prompts = [tok.encode("Q1\nAnswer:"), tok.encode("A much longer question\nAnswer:"), tok.encode("x:")]
    labels = [" yes", " no", " maybe so", " maybe not", " Company", " EducationalInstitution", " Co"]
    candidates = [tok.encode(label) + [tok.eos_token_id] for label in labels] + [[tok.eos_token_id]]
    cpu = torch.device("cpu")
    with torch.no_grad():
        packed = F._rank_decoder_only(model, prompts, candidates, tok.pad_token_id, cpu)
        one_by_one = F._rank_decoder_only_sequential(model, prompts, candidates, tok.pad_token_id, cpu)
        full = F._rank_full_sequences(model, prompts, candidates, tok.pad_token_id, cpu)
    torch.testing.assert_close(packed, one_by_one, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, full, rtol=1e-4, atol=1e-4)
    assert torch.equal(F.rank_answers(model, prompts, candidates, tok.pad_token_id, False), one_by_one.argmax(-1))
    with torch.no_grad():  # the bound prunes nothing on a random model: every candidate is a contender
        best_only = F._rank_decoder_only(model, prompts, candidates, tok.pad_token_id, cpu, best_only=True)
    kept = best_only.isfinite()
    torch.testing.assert_close(best_only[kept], one_by_one[kept], rtol=1e-5, atol=1e-5)
    assert torch.equal(best_only.argmax(-1), one_by_one.argmax(-1))


def test_ranking_over_a_shared_prefix_scores_like_full_sequences(llama):
    model, tok = llama
    head = "Task:TC\nDataset:dbpedia\nWhat is the topic? Option: Company, Artist \n"
    prompts = [tok.encode(head + s + "\nAnswer:") for s in ("Apple Inc.", "A painter of note", "x")]
    candidates = [tok.encode(" Company") + [1], tok.encode(" Artist") + [1], tok.encode(" no") + [1]]
    fed, handle = _fed_tokens(model)
    with torch.no_grad():
        packed = F._rank_decoder_only(model, prompts, candidates, tok.pad_token_id, torch.device("cpu"))
        full = F._rank_full_sequences(model, prompts, candidates, tok.pad_token_id, torch.device("cpu"))
    handle.remove()
    assert fed[0] == len(tok.encode(head))  # the shared prefix ran once (its tokens, one row)
    torch.testing.assert_close(packed, full, rtol=1e-4, atol=1e-4)


def _fed_tokens(model) -> tuple[list[int], object]:
    """Counts the tokens of each forward pass of the decoder body (prompt pass included)."""
    fed: list[int] = []
    handle = model.base_model.register_forward_pre_hook(lambda _, args, kwargs: fed.append(kwargs["input_ids"].numel()), with_kwargs=True)
    return fed, handle


def test_ranking_feeds_only_candidates_that_can_win(llama):
    # A confident model (sharpened head) whose greedy continuation is one of the labels: every other
    # label's first token is far less likely than that label's whole answer, so the bound drops
    # them after one pass of the leader's tokens, and the argmax equals the full scores' argmax.
    model, tok = llama
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    prompts = [tok.encode("Q1\nAnswer:"), tok.encode("A much longer question\nAnswer:")]
    greedy = []
    for p in prompts:
        ids = list(p)
        for _ in range(3):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
        greedy.append(ids[len(p) :])
    others = [tok.encode(label) + [tok.eos_token_id] for label in (" yes", " no", " maybe so")]
    candidates = [c for c in others if c not in greedy] + [greedy[0], greedy[1]]
    cpu = torch.device("cpu")
    fed, handle = _fed_tokens(model)
    try:
        with torch.no_grad():
            best_only = F._rank_decoder_only(model, prompts, candidates, tok.pad_token_id, cpu, best_only=True)
            prompt_pass, leader_pass, *contender_passes = fed
            full = F._rank_decoder_only(model, prompts, candidates, tok.pad_token_id, cpu)
    finally:
        handle.remove()
    assert torch.equal(best_only.argmax(-1), full.argmax(-1))
    assert leader_pass == len(prompts) * 2  # the leader's 3 tokens less the last, per prompt
    assert len(contender_passes) <= 1 and best_only[:, : len(candidates) - 2].isinf().all()  # the labels are dropped
    kept = best_only.isfinite()
    torch.testing.assert_close(best_only[kept], full[kept], rtol=1e-4, atol=1e-4)


def test_single_token_candidates_need_no_second_pass(llama):
    model, tok = llama
    prompts = [tok.encode("Q\nAnswer:"), tok.encode("Longer q\nAnswer:")]
    candidates = [[tok.encode("a")[0]], [tok.encode("b")[0]], [tok.eos_token_id]]
    with torch.no_grad():
        packed = F._rank_decoder_only(model, prompts, candidates, tok.pad_token_id, torch.device("cpu"))
        full = F._rank_full_sequences(model, prompts, candidates, tok.pad_token_id, torch.device("cpu"))
    torch.testing.assert_close(packed, full, rtol=1e-4, atol=1e-4)


def test_seq2seq_encoder_once_scores_equal_re_encoding(tiny_t5_init):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(random_init_config(tiny_t5_init, tok)).eval()
    prompts = [tok.encode("Q1") + [1], tok.encode("Q22 long") + [1]]
    candidates = [tok.encode("yes") + [1], tok.encode("no") + [1]]
    scores = F.label_scores(model, prompts, candidates, tok.pad_token_id, is_seq2seq=True)
    for i, p in enumerate(prompts):
        for j, c in enumerate(candidates):
            logits = model(input_ids=torch.tensor([p]), labels=torch.tensor([c])).logits[0]
            expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(c).unsqueeze(1)).sum()
            assert abs(float(scores[i, j]) - float(expected)) < 1e-4

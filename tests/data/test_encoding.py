import pytest

from nlora_lightning.data.encoding import EncodingConfig, encode_answer, encode_prompt
from nlora_lightning.data.templates import build_prompt
from nlora_lightning.errors import ConfigurationError
from nlora_lightning.models import byte_tokenizer


def test_long_prompt_loses_only_the_end_of_its_sentence():
    tok = byte_tokenizer()
    prompt, span = build_prompt("t", "G", "Pick one.\n", ["yes", "no"], "word " * 100)
    ids, truncated = encode_prompt(tok, prompt, span, max_length=80)
    text = tok.decode(ids)
    assert truncated and len(ids) == 80
    assert text.startswith("Task:G\nDataset:t\nPick one.\nOption: yes, no \nword word")
    assert text.endswith("\nAnswer:")


def test_short_prompt_is_untouched_and_too_short_budget_is_named():
    tok = byte_tokenizer()
    prompt, span = build_prompt("t", "G", "Pick.\n", ["a"], "hi")
    ids, truncated = encode_prompt(tok, prompt, span, max_length=500)
    assert not truncated and tok.decode(ids) == prompt
    with pytest.raises(ConfigurationError, match="too short for task 'x'"):
        encode_prompt(tok, prompt, span, max_length=5, task="x")


def test_answers_end_with_eos_and_decoder_answers_start_with_space():
    tok = byte_tokenizer()
    decoder = encode_answer(tok, "positive", EncodingConfig(decoder_only=True))
    seq2seq = encode_answer(tok, "positive", EncodingConfig(decoder_only=False))
    assert decoder[-1] == tok.eos_token_id and tok.decode(decoder[:-1]) == " positive"
    assert tok.decode(seq2seq[:-1]) == "positive"
    assert len(encode_answer(tok, "x" * 100, EncodingConfig(max_target_length=10))) == 10

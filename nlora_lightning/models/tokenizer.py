"""A byte-level tokenizer that needs no files: for tiny random models in tests and quick checks."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

__all__ = ["BYTE_TOKENIZER", "byte_tokenizer"]

BYTE_TOKENIZER = "byte"
_SPECIALS = ["<pad>", "</s>", "<unk>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte (259 ids: pad 0, eos 1, unk 2, then the 256 bytes); fast, with offsets."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {token: i for i, token in enumerate(_SPECIALS)}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.name_or_path = BYTE_TOKENIZER
    return tokenizer

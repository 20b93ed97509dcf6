import pytest
import torch

from nlora_lightning.models import byte_tokenizer, load_backbone
from nlora_lightning.models.loading import QuantizationConfig, resolve_model_path, resolve_source


def test_byte_tokenizer_round_trips_utf8():
    tok = byte_tokenizer()
    text = "Héllo wörld\nAnswer: ünïcode"
    assert tok.decode(tok.encode(text)) == text
    assert (tok.pad_token_id, tok.eos_token_id, len(tok)) == (0, 1, 259)


def test_random_init_is_seeded_and_detects_family(tiny_llama_init, tiny_t5_init):
    a = load_backbone(None, random_init=tiny_llama_init, seed=3)
    b = load_backbone(None, random_init=tiny_llama_init, seed=3)
    assert not a.is_seq2seq and load_backbone(None, random_init=tiny_t5_init).is_seq2seq
    assert all((pa == pb).all() for pa, pb in zip(a.model.parameters(), b.model.parameters()))


def test_missing_package_and_gguf_file_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="'no_such_pkg_xyz' is not installed"):
        resolve_model_path("package:no_such_pkg_xyz")
    (tmp_path / "real.gguf").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"gguf_file 'missing.gguf' not found.*\['real.gguf'\]"):
        resolve_source(str(tmp_path), "missing.gguf")
    with pytest.raises(FileNotFoundError, match="set gguf_file"):
        resolve_source(str(tmp_path))


def test_quantization_config_validates_bits():
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        QuantizationConfig(bits=3)


def test_every_loader_builds_through_the_backbone_spec(tiny_llama_init, monkeypatch):
    """One loader (issue 24 item 3): load_backbone and load_model are calls of BackboneSpec.load."""
    from nlora_lightning.models import loading

    calls = []
    original = loading.BackboneSpec.load

    def counted(self, *args, **kwargs):
        calls.append(self.random_init)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loading.BackboneSpec, "load", counted)
    backbone = load_backbone(None, random_init=tiny_llama_init, seed=1)
    model = loading.load_model(None, random_init=tiny_llama_init, tokenizer=backbone.tokenizer, seed=1)
    assert len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(backbone.model.parameters(), model.parameters()))
    with pytest.raises(ValueError, match="quantization needs pretrained weights"):
        loading.BackboneSpec(random_init=tiny_llama_init, quantization=QuantizationConfig()).load()

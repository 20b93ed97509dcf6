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

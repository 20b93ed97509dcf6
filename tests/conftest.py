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

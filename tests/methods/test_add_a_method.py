"""docs/architecture.md's "How to add a method": its two snippets, taken from the markdown, build and train a method."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.methods import METHODS, MethodConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def snippets() -> tuple[str, dict]:
    section = DOC.read_text().split("## How to add a method", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    return python, config


@pytest.fixture(scope="module")
def toy_method():
    code, config = snippets()
    METHODS.pop("shrink_b", None)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    yield METHODS["shrink_b"], config
    METHODS.pop("shrink_b", None)


def test_the_snippet_registers_a_method_with_typed_options(toy_method):
    cls, config = toy_method
    assert cls.name == "shrink_b" and config["model"]["methods"][0]["name"] == "shrink_b"
    with pytest.raises(ConfigurationError, match=r"no option\(s\) \['powr'\]; its options are: power: float = 2.0"):
        from nlora_lightning.methods import build_method
        build_method("shrink_b", {"powr": 1})


def test_the_snippets_yaml_entry_trains_with_its_loss_and_gradient_hook(toy_method, tiny, tiny_llama_init, make_trainer):
    _, config = toy_method
    entry = MethodConfig(**config["model"]["methods"][0])
    module = tiny.module(tiny_llama_init, adapters=config["model"]["adapters"], methods=[entry])
    assert module.method_name == "shrink_b"
    trainer = make_trainer()
    trainer.fit(module, datamodule=tiny.data(max_train_samples=8, max_eval_samples=2))
    logged = trainer.logged_metrics
    assert "train/reg/shrink_b" in logged and float(logged["train/grad/shrink_b/grad_scale"]) == 0.5

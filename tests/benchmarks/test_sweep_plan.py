"""benchmarks/sweep_plan.py: every plan's template, filled with its default, gives exactly the shipped config's
methods, and any other grid value changes that one setting alone (so a multi-hour sweep cannot run a typo)."""

import contextlib
import io
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from nlora_lightning.methods import MethodConfig, resolve_methods

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="module")
def plan_module(load_script):
    return load_script("benchmarks/sweep_plan.py")


def resolved(parser, method, extra=()):
    """The methods ``nlora fit`` would build for smollm2 + standard order 1 + ``method``, every lambda resolved."""
    files = [CONFIGS / "models" / "smollm2.yaml", CONFIGS / "benchmarks" / "standard_order1.yaml",
             CONFIGS / "methods" / f"{method}.yaml"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["fit", *(a for f in files for a in ("--config", str(f))), *extra, "--print_config"])
    assert exit_info.value.code in (0, None)
    model = yaml.safe_load(printed.getvalue())["model"]
    entries = [MethodConfig(**entry) for entry in model["methods"]]
    return [asdict(config) for config, _ in resolve_methods(entries, model["method_defaults"])]


def leaves(value, path=()):
    if isinstance(value, dict):
        return {p: v for k, item in value.items() for p, v in leaves(item, (*path, k)).items()}
    if isinstance(value, list):
        return {p: v for i, item in enumerate(value) for p, v in leaves(item, (*path, i)).items()}
    return {path: value}


def test_plans_are_well_formed(plan_module):
    names = [plan.name for plan in plan_module.PLANS]
    assert len(names) == len(set(names))
    methods = {plan.method for plan in plan_module.PLANS}
    # the list: nlora in both forms, olora, ella, ewc_lora, ewc, lwf, migu, gorp
    assert methods == {"nlora", "nlora_official", "olora", "ella", "ewc_lora", "ewc", "lwf", "migu", "gorp"}
    for plan in plan_module.PLANS:
        assert (CONFIGS / "methods" / f"{plan.method}.yaml").is_file()
        assert plan.default in plan.grid and len(plan.grid) >= 4, plan.name
        assert [float(v) for v in plan.grid] == sorted(float(v) for v in plan.grid), plan.name


@pytest.mark.parametrize("name", ["nlora_delta_w", "nlora_official", "olora", "ella", "ewc_lora", "ewc", "lwf",
                                  "migu_top_ratio", "gorp_threshold"])
def test_the_template_changes_the_swept_setting_and_nothing_else(plan_module, fit_parser, name):
    plan = plan_module.BY_NAME[name]
    shipped = resolved(fit_parser, plan.method)
    fill = lambda value: [f"--{plan.key}={plan.template.replace('{value}', value)}"]  # noqa: E731
    assert resolved(fit_parser, plan.method, fill(plan.default)) == shipped
    other = next(value for value in plan.grid if value != plan.default)
    changed = leaves(resolved(fit_parser, plan.method, fill(other)))
    base = leaves(shipped)
    assert changed.keys() == base.keys()
    differing = {path for path in base if base[path] != changed[path]}
    assert len(differing) == 1, differing
    assert float(changed[differing.pop()]) == float(other)


def test_dry_run_prints_one_resumable_sweep_command_per_plan(plan_module, capsys):
    assert plan_module.main(["ella", "gorp_threshold", "--dry-run", "--data-dir", "DATA", "--jobs", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "benchmarks/sweep.py --method ella --key model.methods" in lines[0]
    assert "--grid 1e3 1e4 1e5 1e6 --default 1e3 --weaker smaller" in lines[0]
    assert "--out benchmarks/results/sweeps_250x1/ella" in lines[0] and "--data-dir DATA" in lines[0]
    assert "--final-seeds 0 1 2" in lines[0] and "--jobs 2" in lines[0]
    assert "--out benchmarks/results/sweeps_250x1/gorp_threshold" in lines[1]


def test_unknown_or_missing_plan_names_are_refused(plan_module, capsys):
    for argv in (["nope"], []):
        with pytest.raises(SystemExit) as exit_info:
            plan_module.main(argv)
        assert exit_info.value.code == 2
    assert "unknown: ['nope']" in capsys.readouterr().err


def test_every_plan_is_a_command_sweep_py_accepts(plan_module, load_script):
    sweep = load_script("benchmarks/sweep.py")
    args = plan_module.parse(["all", "--data-dir", "DATA"])
    for plan in plan_module.PLANS:
        parsed = sweep.parse(plan_module.sweep_argv(plan, args))
        assert parsed.grid == list(plan.grid) and parsed.default == plan.default and parsed.weaker == plan.weaker
        assert parsed.validation_samples == 100 and parsed.max_train_samples == 250 and parsed.final_seeds == [0, 1, 2]

import pytest

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.methods import MethodConfig
from nlora_lightning.methods import NLoRAL1, build_method, compose_defaults_arguments, describe_lambda, resolve_methods
from nlora_lightning.methods.nlora_l1 import KEY_NOTES


def lambda_form(name, options):
    return build_method(name, dict(options)).lambda_key()


def describe_lambda_form(name, options):
    return describe_lambda(name, options)


def resolve_regularizer_weights(listed, defaults):
    # One entry at a time: a list names each method once (its state and log key are by name).
    resolve_methods([], defaults)  # the defaults are checked even when no entry uses them
    return [entry for config in listed for entry, _ in resolve_methods([config], defaults)]

PAPER_AND_SWEEP = {
    "nlora_l1/official": {"weight": 0.4, "task_weights": {"WiC": 1.2}},
    "nlora_l1/delta_w": {"weight": 0.001},
    "olora_orthogonality": {"weight": 0.5},
}


@pytest.mark.parametrize("options, form", [
    ({}, "nlora_l1/delta_w"),
    ({"mode": "delta_w", "blocked": False}, "nlora_l1/delta_w"),
    ({"mode": "delta_w", "reduction": "sum"}, "nlora_l1/delta_w"),
    ({"reduction": "mean"}, "nlora_l1/delta_w/mean"),
    ({"mode": "official"}, "nlora_l1/official"),
])
def test_the_form_key_follows_mode_and_reduction(options, form):
    assert lambda_form("nlora_l1", options) == form


def test_every_form_has_a_note_and_other_regularizers_are_keyed_by_name():
    assert set(KEY_NOTES) == set(NLoRAL1.lambda_keys())
    assert lambda_form("olora_orthogonality", {}) == "olora_orthogonality"
    assert describe_lambda_form("olora_orthogonality", {}) is None
    assert "SmolLM2-135M" in describe_lambda_form("nlora_l1", {}) and "T5-large" in describe_lambda_form("nlora_l1", {"mode": "official"})


@pytest.mark.parametrize("options, message", [
    ({"mode": "deltaw"}, "mode must be one of"),
    ({"reduction": "avg"}, "reduction must be one of"),
    ({"mode": "official", "reduction": "mean"}, "applies to mode='delta_w' only"),
])
def test_unknown_mode_or_reduction_is_refused(options, message):
    with pytest.raises(ConfigurationError, match=message):
        lambda_form("nlora_l1", options)


def test_each_entry_takes_the_default_of_its_own_form():
    listed = [MethodConfig("nlora_l1", options={"mode": "official"}), MethodConfig("nlora_l1"),
              MethodConfig("olora_orthogonality"), MethodConfig("l2", weight=0.0)]
    official, delta_w, olora, l2 = resolve_regularizer_weights(listed, PAPER_AND_SWEEP)
    assert (official.weight, official.weight_for("WiC")) == (0.4, 1.2)
    assert (delta_w.weight, delta_w.weight_for("WiC"), delta_w.task_weights) == (0.001, 0.001, {})
    assert (olora.weight, l2.weight) == (0.5, 0.0)
    assert official.options == {"mode": "official"}


def test_an_explicit_weight_wins_and_entry_task_weights_override_the_defaults():
    explicit = MethodConfig("nlora_l1", weight=0.02, options={"mode": "official"})
    partial = MethodConfig("nlora_l1", task_weights={"WiC": 3.0}, options={"mode": "official"})
    kept, merged = resolve_regularizer_weights([explicit, partial], PAPER_AND_SWEEP)
    assert kept is explicit
    assert (merged.weight, merged.weight_for("WiC")) == (0.4, 3.0)


def test_a_form_without_default_fails_naming_the_form_and_never_borrows_another_forms_lambda():
    with pytest.raises(ConfigurationError, match=r"lambda key nlora_l1/delta_w/mean\) has no weight.*nlora_l1/delta_w'.*"
                                                r"--model.method_defaults.nlora_l1/delta_w/mean"):
        resolve_regularizer_weights([MethodConfig("nlora_l1", options={"reduction": "mean"})], PAPER_AND_SWEEP)
    only_official = {"nlora_l1/official": {"weight": 0.4}}
    with pytest.raises(ConfigurationError, match=r"lambda key nlora_l1/delta_w\) has no weight.*only for \['nlora_l1/official'\]"):
        resolve_regularizer_weights([MethodConfig("nlora_l1")], only_official)
    with pytest.raises(ConfigurationError, match="has no weight and no default for its key: give the entry a weight"):
        resolve_regularizer_weights([MethodConfig("olora_orthogonality")], None)


@pytest.mark.parametrize("defaults, message", [
    ({"nlora_l1": {"weight": 0.4}}, "does not say which penalty form.*nlora_l1/official"),
    ({"nlora_l1/delta-w": {"weight": 0.4}}, "names no penalty form of nlora_l1"),
    ({"olora_orthogonality/fast": {"weight": 0.4}}, "no method takes its lambda from it"),
    ({"nlora_l1/delta_w": {"lambda": 0.4}}, "must be a mapping with 'weight'"),
    ({"nlora_l1/delta_w": 0.4}, "must be a mapping with 'weight'"),
    ({"nlora_l1/delta_w": {"weight": "0.4"}}, "must be a number"),
])
def test_bad_defaults_are_refused_even_when_no_entry_uses_them(defaults, message):
    with pytest.raises(ConfigurationError, match=message):
        resolve_regularizer_weights([], defaults)


def test_a_negative_default_is_refused_like_a_negative_weight():
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        resolve_regularizer_weights([MethodConfig("nlora_l1")], {"nlora_l1/delta_w": {"weight": -1.0}})


def test_composed_configs_merge_lambda_defaults_key_by_key(tmp_path):
    base, later = tmp_path / "base.yaml", tmp_path / "later.yaml"
    base.write_text("model:\n  method_defaults:\n    nlora_l1/delta_w: {weight: 0.01}\n    nlora_l1/official: {weight: 0.01}\n")
    later.write_text("model:\n  method_defaults:\n    nlora_l1/official: {weight: 0.4}\n")
    words = compose_defaults_arguments(["fit", "--config", str(base), "--config", str(later), "--model.lora.r", "2"])
    assert words[:5] == ["fit", "--config", str(base), "--config", str(later)] and words[-2:] == ["--model.lora.r", "2"]
    assert words[5] == "--model.method_defaults"
    assert __import__("json").loads(words[6]) == {"nlora_l1/delta_w": {"weight": 0.01}, "nlora_l1/official": {"weight": 0.4}}
    assert compose_defaults_arguments(["fit", "--config", str(base)]) == ["fit", "--config", str(base)]

"""Loss terms: registration in the regularizers' namespace, adapter-mode checks, option checks."""

import pytest
import torch

from nlora_lightning import RegularizerConfig
from nlora_lightning.errors import ConfigurationError
from nlora_lightning.losses import LOSS_TERMS, LossTerm, LossTerms, register_loss_term
from nlora_lightning.regularizers import REGULARIZERS, validate_regularizer


def test_loss_terms_share_the_regularizer_namespace():
    assert {"ewc_lora", "ewc", "lwf"} <= set(LOSS_TERMS) and {"ewc_lora", "ewc", "lwf", "ella"} <= set(REGULARIZERS)
    with pytest.raises(ValueError, match="already registered"):
        register_loss_term("nlora_l1")(type("Clash", (LossTerm,), {}))
    with pytest.raises(TypeError, match="LossTerm subclass"):
        register_loss_term("not_a_term")(lambda layers: 0)


@pytest.mark.parametrize(
    "name, adapters, message",
    [
        ("ella", "shared", r"'ella' works with adapters \['per_task'\].*earlier tasks' frozen adapters"),
        ("lwf", "shared", r"'lwf' works with adapters \['per_task'\].*second copy"),
        ("ewc", "per_task", r"'ewc' works with adapters \['shared'\].*use ewc_lora"),
    ],
)
def test_unsupported_adapter_modes_are_refused_at_construction(tiny, tiny_llama_init, name, adapters, message):
    with pytest.raises(ConfigurationError, match=message):
        tiny.module(tiny_llama_init, adapters=adapters, regularizers=[RegularizerConfig(name, 1.0)])


def test_bad_options_name_the_term():
    with pytest.raises(ConfigurationError, match="regularizer 'lwf': bad options"):
        LossTerms([RegularizerConfig("lwf", 1.0, options={"temprature": 2.0})], "per_task")
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        LossTerms([RegularizerConfig("lwf", 1.0, options={"temperature": 0})], "per_task")
    with pytest.raises(ValueError, match="fisher_samples must be a positive integer"):
        LossTerms([RegularizerConfig("ewc_lora", 1.0, options={"fisher_samples": 0})], "per_task")
    # the same options check as for factor regularizers, before any model is loaded
    with pytest.raises(ConfigurationError, match=r"'ewc_lora' has no option\(s\) \['samples'\]"):
        validate_regularizer("ewc_lora", [], {"samples": 3})


def test_a_stateless_term_refuses_foreign_state():
    class Plain(LossTerm):
        def value(self, module, batch):
            return torch.zeros(())

    with pytest.raises(ValueError, match="keeps no state"):
        Plain().load_state_dict({"importance": {}})

"""Regularizers: pure tensor math (``functional``), layer-level terms with a registry (``terms``)."""

from nlora_lightning.regularizers.config import RegularizerConfig
from nlora_lightning.regularizers.functional import (
    l1_of_product,
    l1_of_product_naive,
    l2_penalty,
    official_nlora_l1,
    orthogonality_penalty,
)
from nlora_lightning.regularizers.terms import (
    REGULARIZERS,
    get_regularizer,
    register_regularizer,
    validate_regularizer,
)

__all__ = [
    "REGULARIZERS",
    "RegularizerConfig",
    "get_regularizer",
    "l1_of_product",
    "l1_of_product_naive",
    "l2_penalty",
    "official_nlora_l1",
    "orthogonality_penalty",
    "register_regularizer",
    "validate_regularizer",
]

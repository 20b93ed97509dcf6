"""Analysis of trained task updates: parameter collision, orthogonality (overlap), sparsity, norms."""

from nlora_lightning.analysis.functional import (
    DEFAULT_TAU,
    PairwiseAnalysis,
    collision_rate,
    dense_update,
    frobenius_norm,
    nuclear_norm,
    pairwise_analysis,
    sparsity,
    update_overlap,
)

__all__ = [
    "DEFAULT_TAU",
    "PairwiseAnalysis",
    "collision_rate",
    "dense_update",
    "frobenius_norm",
    "nuclear_norm",
    "pairwise_analysis",
    "sparsity",
    "update_overlap",
]

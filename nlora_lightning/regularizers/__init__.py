"""The penalties' math as pure tensor functions (``functional``); the methods using them live in ``nlora_lightning.methods``.

``RegularizerConfig`` is the deprecated entry type of ``model.regularizers`` (one release; use
``nlora_lightning.MethodConfig`` and ``model.methods``).
"""

from nlora_lightning.regularizers.config import RegularizerConfig
from nlora_lightning.regularizers.functional import (
    l1_of_product,
    l1_of_product_naive,
    l2_penalty,
    official_nlora_l1,
    orthogonality_penalty,
)

__all__ = [
    "RegularizerConfig",
    "l1_of_product",
    "l1_of_product_naive",
    "l2_penalty",
    "official_nlora_l1",
    "orthogonality_penalty",
]

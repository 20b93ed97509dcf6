"""Default lambdas per penalty form: which ``regularizer_defaults`` entry a regularizer takes its weight from.

N-LoRA's ``nlora_l1`` has forms whose lambdas live on different scales: the paper's entrywise L1 of
the d_out x d_in update ``B_t A_t`` (``delta_w``, summed or averaged over its entries) and the
released code's L1 of the r x r product ``A_t B_t`` (``official``). The paper's lambdas (0.4, 1.2,
0.55, 1.8 on T5-large; 0.46 / 0.38 / 0.4 on LLaMA-7B) were tuned with the released code, i.e. for
the ``official`` form. So defaults are keyed by form, and a regularizer listed without a weight
takes the default of its own form or fails; it never takes another form's lambda.

Keys of ``regularizer_defaults``:

- ``nlora_l1/delta_w``: the paper's form with ``reduction: sum`` (the default),
- ``nlora_l1/delta_w/mean``: the same L1 divided by each layer's d_out x d_in,
- ``nlora_l1/official``: the released code's r x r form,
- any other regularizer by its plain name (``olora_orthogonality``, ``l2``, ...).

A plain ``nlora_l1`` key is refused: it cannot say which form its lambda was tuned for.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.regularizers.config import RegularizerConfig

__all__ = ["FORM_NOTES", "lambda_form", "describe_lambda_form", "resolve_regularizer_weights"]

NLORA_MODES = ("delta_w", "official")
NLORA_REDUCTIONS = ("sum", "mean")
# Regularizers whose lambda depends on the penalty form, and their forms (the keys above, less the name).
FORMS: dict[str, tuple[str, ...]] = {"nlora_l1": ("delta_w", "delta_w/mean", "official")}

# What each form's lambda means and where the shipped configs' default comes from (report.md prints it).
FORM_NOTES: dict[str, str] = {
    "nlora_l1/delta_w": (
        "paper's form, sum_layers ||B_t A_t||_1 over all d_out x d_in entries; the shipped default comes from a "
        "sweep on SmolLM2-135M, standard order 1 (benchmarks/results/real_data/lambda_sweep), not from the paper"
    ),
    "nlora_l1/delta_w/mean": (
        "paper's form divided by each layer's d_out x d_in (mean per entry); no shipped default"
    ),
    "nlora_l1/official": (
        "released code's form, sum_layers ||A_t B_t||_1 (r x r); the paper's lambdas (tuned per order on "
        "T5-large, 0.46/0.38/0.4 on LLaMA-7B) belong to this form"
    ),
}


def lambda_form(name: str, options: Optional[Mapping[str, Any]] = None) -> str:
    """The ``regularizer_defaults`` key of a regularizer entry: its name, plus the form for ``nlora_l1``.

    Raises:
        ConfigurationError: If ``nlora_l1``'s ``mode`` or ``reduction`` is not one it has.

    Example:
        >>> lambda_form("nlora_l1", {"mode": "official"}), lambda_form("nlora_l1", {"reduction": "mean"})
        ('nlora_l1/official', 'nlora_l1/delta_w/mean')
    """
    if name != "nlora_l1":
        return name
    options = options or {}
    mode, reduction = options.get("mode", "delta_w"), options.get("reduction", "sum")
    if mode not in NLORA_MODES:
        raise ConfigurationError(f"nlora_l1 mode must be one of {list(NLORA_MODES)}, got {mode!r}")
    if reduction not in NLORA_REDUCTIONS:
        raise ConfigurationError(f"nlora_l1 reduction must be one of {list(NLORA_REDUCTIONS)}, got {reduction!r}")
    if mode == "official" and reduction != "sum":
        raise ConfigurationError("nlora_l1 reduction='mean' applies to mode='delta_w' only (official is the released code's sum)")
    return f"nlora_l1/{mode}" if reduction == "sum" else f"nlora_l1/{mode}/{reduction}"


def describe_lambda_form(name: str, options: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """``"form nlora_l1/delta_w: <what its lambda means and where the default comes from>"``, or ``None``."""
    try:
        form = lambda_form(name, options)
    except ConfigurationError:
        return None
    return f"form {form}: {FORM_NOTES[form]}" if form in FORM_NOTES else None


def _how_to_set(form: str) -> str:
    return (f"give the entry a weight, or set model.regularizer_defaults.{form}, e.g. "
            f"--model.regularizer_defaults.{form} '{{\"weight\": LAMBDA}}'")


def _checked_defaults(defaults: Optional[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    checked: dict[str, dict[str, Any]] = {}
    for key, entry in (defaults or {}).items():
        name, _, form = str(key).partition("/")
        if name in FORMS and not form:
            choices = ", ".join(f"{name}/{f}" for f in FORMS[name])
            raise ConfigurationError(
                f"model.regularizer_defaults key {key!r} does not say which penalty form its lambda is for; the forms' "
                f"lambdas are on different scales (the paper's 0.4 is for nlora_l1/official). Use one of: {choices}"
            )
        if form and form not in FORMS.get(name, ()):
            known = [f"{n}/{f}" for n, forms in FORMS.items() for f in forms]
            raise ConfigurationError(f"model.regularizer_defaults key {key!r} names no penalty form; forms with their own key: {known}")
        if not isinstance(entry, Mapping) or set(entry) - {"weight", "task_weights"}:
            raise ConfigurationError(
                f"model.regularizer_defaults[{key!r}] must be a mapping with 'weight' and optionally 'task_weights', got {entry!r}"
            )
        weight = entry.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight)):
            raise ConfigurationError(f"model.regularizer_defaults[{key!r}]['weight'] must be a number, got {weight!r}")
        checked[str(key)] = dict(entry)
    return checked


def resolve_regularizer_weights(
    regularizers: Sequence[RegularizerConfig], defaults: Optional[Mapping[str, Any]]
) -> list[RegularizerConfig]:
    """Fill each entry without a weight from the default of its own form (see :func:`lambda_form`).

    Args:
        regularizers: The configured entries; those with a ``weight`` are kept as they are.
        defaults: ``{form key: {"weight": float, "task_weights": {task: float}}}``.

    Raises:
        ConfigurationError: For a key without a form (plain ``nlora_l1``), an unknown form, an entry
            that is not ``{weight, task_weights}``, or a regularizer whose form has no default.

    Example:
        >>> defaults = {"nlora_l1/official": {"weight": 0.4}, "nlora_l1/delta_w": {"weight": 1e-3}}
        >>> [r.weight for r in resolve_regularizer_weights([RegularizerConfig("nlora_l1")], defaults)]
        [0.001]
    """
    checked = _checked_defaults(defaults)
    resolved = []
    for reg in regularizers:
        form = lambda_form(reg.name, reg.options)
        if reg.weight is None:
            if form not in checked or checked[form].get("weight") is None:
                other = sorted(k for k in checked if k.partition("/")[0] == reg.name)
                others = f" (defaults exist only for {other}, other forms whose lambdas do not transfer)" if other else ""
                raise ConfigurationError(f"regularizer {reg.name!r} (form {form}) has no weight and no default for its form{others}: "
                                         + _how_to_set(form))
            reg = reg.with_defaults(checked[form])
        resolved.append(reg)
    return resolved

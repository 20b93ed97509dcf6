"""``model.methods`` entries, their lambdas, and the lambda defaults per key (``model.method_defaults``).

Each entry names a registered method, its lambda (``weight``, per task ``task_weights``) and its
typed ``options``. An entry of a method that adds a loss, listed without a weight, takes the lambda
of its method's *lambda key* from ``model.method_defaults`` (N-LoRA's key says which penalty form
the lambda is for, as the forms' lambdas live on different scales; see ``methods/nlora_l1.py``),
or fails. Defaults of several composed configs are merged key by key (:func:`merge_method_defaults`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.methods.base import METHODS, Method, build_method

log = logging.getLogger(__name__)

__all__ = [
    "MethodConfig", "check_method_defaults", "compose_defaults_arguments", "describe_lambda", "merge_method_defaults",
    "resolve_methods",
]


@dataclass
class MethodConfig:
    """One method of the run: ``loss += weight_for(task) * method.loss(...)`` plus whatever its hooks do.

    Args:
        name: A registered method (``nlora_l1``, ``olora_orthogonality``, ``l2``, ``ella``, ``lwf``,
            ``ewc``, ``ewc_lora``, ``migu``, ``gorp``, or one added with ``register_method``).
        weight: The lambda for every task without an entry in ``task_weights``. ``None`` takes it
            from ``model.method_defaults[<the method's lambda key>]``. Ignored by methods that add
            no loss (``migu``, ``gorp``).
        task_weights: Per-task lambdas keyed by task name.
        options: Keyword arguments of the method's class (its typed ``__init__``; e.g.
            ``{"mode": "official"}`` for ``nlora_l1``). ``python -m nlora_lightning.methods`` lists them.

    Raises:
        ValueError: If a lambda is negative or not finite, or options is not a mapping.

    Example:
        >>> MethodConfig('nlora_l1', weight=0.4, task_weights={'WiC': 1.2}).weight_for('WiC')
        1.2
    """

    name: str
    weight: Optional[float] = None
    task_weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a method entry needs a name, got {self.name!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"method {self.name!r}: options must be a mapping, got {type(self.options).__name__}")
        weights = [] if self.weight is None else [("weight", self.weight)]
        for label, value in [*weights, *((f"task_weights[{k!r}]", v) for k, v in self.task_weights.items())]:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"method {self.name!r}: {label} (lambda) must be a finite number >= 0, got {value!r}")

    def weight_for(self, task_name: Optional[str]) -> float:
        if task_name is not None and task_name in self.task_weights:
            return float(self.task_weights[task_name])
        if self.weight is None:
            raise ValueError(f"method {self.name!r} has no weight; set weight or model.method_defaults")
        return float(self.weight)

    def with_defaults(self, defaults: Optional[Mapping[str, Any]]) -> "MethodConfig":
        """Fill a missing weight (and task weights) from ``{"weight": ..., "task_weights": {...}}``."""
        if self.weight is not None or not defaults:
            return self
        return MethodConfig(self.name, weight=defaults.get("weight"),
                            task_weights={**defaults.get("task_weights", {}), **self.task_weights}, options=dict(self.options))

    @property
    def active(self) -> bool:
        """Whether the entry's loss can be non-zero at some task."""
        return bool(self.weight) or any(self.task_weights.values())


def _known_keys() -> list[str]:
    return sorted(key for cls in METHODS.values() if cls.adds_loss for key in cls.lambda_keys())


def check_method_defaults(defaults: Optional[Mapping[str, Any]], option: str = "model.method_defaults") -> dict[str, dict[str, Any]]:
    """``defaults`` checked: every key a lambda key of a registered method, every entry ``{weight, task_weights}``.

    Raises:
        ConfigurationError: Naming the key and what is wrong (a method's own message for a key that
            names the method but not which of its lambda keys, e.g. plain ``nlora_l1``).
    """
    checked: dict[str, dict[str, Any]] = {}
    known = _known_keys()
    for key, entry in (defaults or {}).items():
        key = str(key)
        if key not in known:
            cls = METHODS.get(key.partition("/")[0])
            message = cls.lambda_key_error(key) if cls is not None else None
            raise ConfigurationError(f"{option} key {key!r}: " + (message or f"no method takes its lambda from it; keys: {known}"))
        if not isinstance(entry, Mapping) or set(entry) - {"weight", "task_weights"}:
            raise ConfigurationError(f"{option}[{key!r}] must be a mapping with 'weight' and optionally 'task_weights', got {entry!r}")
        weight = entry.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight)):
            raise ConfigurationError(f"{option}[{key!r}]['weight'] must be a number, got {weight!r}")
        checked[key] = dict(entry)
    return checked


def merge_method_defaults(layers: Iterable[Optional[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Defaults of composed configs, in order, merged key by key: a later key replaces only that key.

    Example:
        >>> merge_method_defaults([{"a": {"weight": 1}, "b": {"weight": 2}}, {"b": {"weight": 3}}])
        {'a': {'weight': 1}, 'b': {'weight': 3}}
    """
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for key, entry in (layer or {}).items():
            merged[str(key)] = entry
    return merged


def resolve_methods(configs: Sequence[MethodConfig], defaults: Optional[Mapping[str, Any]],
                    option: str = "model.method_defaults") -> list[tuple[MethodConfig, Method]]:
    """Build every entry's method and fill a missing lambda from the default of its method's lambda key.

    Raises:
        ConfigurationError: For an unknown method or option, a name listed twice, a bad defaults key,
            or a loss-adding entry with no weight and no default for its key.
    """
    names = [c.name for c in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigurationError(f"model.methods lists {twice} more than once")
    checked = check_method_defaults(defaults, option)
    resolved = []
    for config in configs:
        method = build_method(config.name, dict(config.options))
        key = method.lambda_key()
        if method.adds_loss and config.weight is None:
            default = checked.get(key)
            if default is None or default.get("weight") is None:
                others = sorted(k for k in checked if k.partition("/")[0] == config.name)
                hint = f" (defaults exist only for {others}, whose lambdas do not transfer)" if others else ""
                raise ConfigurationError(
                    f"method {config.name!r} (lambda key {key}) has no weight and no default for its key{hint}: give the entry "
                    f"a weight, or set {option}.{key}, e.g. --{option}.{key} '{{\"weight\": LAMBDA}}'")
            config = config.with_defaults(default)
        resolved.append((config, method))
    return resolved


def describe_lambda(name: str, options: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The method's own note on what its lambda means (e.g. N-LoRA's penalty form), or ``None`` (unknown, bad options)."""
    try:
        return build_method(name, dict(options or {})).lambda_note()
    except ConfigurationError:
        return None


DEFAULTS_OPTIONS = ("method_defaults", "regularizer_defaults")  # regularizer_defaults: deprecated, merged alike


def compose_defaults_arguments(words: Sequence[str]) -> list[str]:
    """Command-line words with the lambda defaults of every ``--config`` file merged key by key.

    A config parser replaces a mapping set by an earlier config file as a whole; lambda defaults must
    not lose the keys a later config does not name (a benchmark config setting ``nlora_l1/official``
    would drop the base config's ``nlora_l1/delta_w``). When two or more config files set
    ``model.method_defaults`` (or the deprecated ``model.regularizer_defaults``), their merge is added
    right after the last ``--config``, so options given after it still win. Unreadable files are left
    to the parser, which names them.

    Example:
        >>> compose_defaults_arguments(["fit", "--model.lora.r", "4"])
        ['fit', '--model.lora.r', '4']
    """
    import yaml

    words = list(words)
    layers: dict[str, list[Mapping[str, Any]]] = {option: [] for option in DEFAULTS_OPTIONS}
    last = None
    for index, word in enumerate(words):
        path = words[index + 1] if word == "--config" and index + 1 < len(words) else (
            word.partition("=")[2] if word.startswith("--config=") else None)
        if path is None:
            continue
        last = index + (2 if word == "--config" else 1)
        try:
            model = (yaml.safe_load(Path(path).read_text()) or {}).get("model") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        for option in DEFAULTS_OPTIONS:
            if isinstance(model.get(option), Mapping):
                layers[option].append(model[option])
    extra = []
    for option, found in layers.items():
        if len(found) > 1:
            extra += [f"--model.{option}", json.dumps(merge_method_defaults(found))]
    return words if last is None or not extra else words[:last] + extra + words[last:]


# ----- from the module's arguments to its methods -------------------------------------------------
def as_config(cls, value):
    """Accept a dataclass or its dict form (checkpoints keep hyperparameters as plain dicts).

    Raises:
        ConfigurationError: For anything else.
    """
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise ConfigurationError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")


def deprecated_option(option: str, instead: str) -> None:
    log.warning("model.%s is deprecated and will be removed in the next release; use %s", option, instead)


def method_entries(methods: Sequence[Any], regularizers: Sequence[Any] = (), gradient_transforms: Sequence[Any] = ()) -> list[MethodConfig]:
    """``model.methods`` after the deprecated lists' entries (old configs: regularizers, then transforms)."""
    from nlora_lightning.gradients.config import GradientTransformConfig
    from nlora_lightning.regularizers.config import RegularizerConfig

    entries = []
    if regularizers:
        deprecated_option("regularizers", "model.methods (same entries)")
        entries += [MethodConfig(**as_config(RegularizerConfig, r).__dict__) for r in regularizers]
    if gradient_transforms:
        deprecated_option("gradient_transforms", "model.methods (entries without a weight)")
        entries += [MethodConfig(g.name, options=dict(g.options)) for g in (as_config(GradientTransformConfig, t) for t in gradient_transforms)]
    return entries + [as_config(MethodConfig, m) for m in methods or ()]


def check_adapter_mode(adapter_mode: str, configs: Sequence[MethodConfig], methods: Sequence[Method]) -> None:
    """Raise ``ConfigurationError`` unless every method works with the module's ``adapters`` setting."""
    if adapter_mode == "none":
        if configs:
            raise ConfigurationError(f"methods {[m.name for m in configs]} act on LoRA adapters; adapters='none' has none")
        return
    for method in methods:
        if adapter_mode not in method.adapters:
            reason = f": {method.adapters_reason}" if method.adapters_reason else ""
            raise ConfigurationError(f"method {method.name!r} works with adapters {list(method.adapters)}, "
                                     f"not adapters={adapter_mode!r}{reason}")


def derived_method_name(adapter_mode: str, configs: Sequence[MethodConfig], methods: Sequence[Method]) -> str:
    """The report label of a module whose config names none: ``seqft``, ``seqlora``, ``inclora`` or the methods' labels."""
    if adapter_mode == "none":
        return "seqft"
    if adapter_mode == "shared" and not configs:
        return "seqlora"
    labels = [m.name if m.label is None else m.label for c, m in zip(configs, methods) if c.active or not m.adds_loss]
    return "+".join(label for label in labels if label) or ("seqlora" if adapter_mode == "shared" else "inclora")

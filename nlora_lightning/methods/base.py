"""The one extension point for continual-learning methods: :class:`Method` and its registry.

A method is one class with no-op hooks, in the style of Lightning's ``Callback``: it overrides only
what it needs, and may add a loss term, rewrite gradients, keep state across tasks, or all three.
It is registered once under the name used in configs (as PEFT's ``register_peft_method``)::

    @register_method("my_method")
    class MyMethod(Method):
        def __init__(self, power: float = 2.0):
            self.power = power

        def loss(self, module, batch, out):
            return sum(p.abs().pow(self.power).sum() for p in module.adapters.slot_parameters())

The module calls, in this order (see ``docs/architecture.md``): :meth:`Method.validate` when the
adapters are known (on the meta-device skeleton too, before anything is written),
:meth:`Method.attach` once the adapters exist, per training step :meth:`Method.loss` (multiplied by
the entry's lambda) and, once per optimizer step, :meth:`Method.before_optimizer_step`; at each
task's end :meth:`Method.on_task_end` while the finished task's slot and optimizer still exist;
:meth:`Method.state_dict` / :meth:`Method.load_state_dict` with the module's checkpoint.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence

import torch
from torch import Tensor

from nlora_lightning.errors import ConfigurationError

__all__ = [
    "METHODS", "Method", "TaskBatches", "build_method", "describe_options", "full_options", "get_method", "register_method",
    "zero_loss",
]

# ``batches(samples, batch_size)``: that many training samples of the finished task, collated, on the device.
TaskBatches = Callable[[int, int], Iterator[dict[str, Tensor]]]


class Method:
    """Base class of a continual-learning method: every hook is a no-op.

    Class attributes (set by a subclass where they differ):
        adapters: The adapter modes the method works with; others are refused when the module is built.
        adapters_reason: Why, for that error message.
        adds_loss: Whether :meth:`loss` gives a term (its entry then needs a lambda: ``weight``,
            ``task_weights`` or a ``model.method_defaults`` entry of its :meth:`lambda_key`).
        label: The method's short name for a run whose ``method_name`` is not set (``None``: its
            registered name; ``""``: it does not name the run).
    """

    name: ClassVar[str] = ""
    adapters: ClassVar[tuple[str, ...]] = ("per_task", "shared")
    adapters_reason: ClassVar[str] = ""
    adds_loss: ClassVar[bool] = True
    label: ClassVar[Optional[str]] = None

    # ----- lambdas and reports -------------------------------------------------------------------
    def lambda_key(self) -> str:
        """The ``model.method_defaults`` key this entry takes its lambda from (default: the name)."""
        return self.name

    @classmethod
    def lambda_keys(cls) -> tuple[str, ...]:
        """Every key :meth:`lambda_key` can return (``method_defaults`` keys are checked against these)."""
        return (cls.name,)

    @classmethod
    def lambda_key_error(cls, key: str) -> Optional[str]:
        """A message for a ``method_defaults`` key of this method that is not one of its keys (or ``None``)."""
        return None

    def lambda_note(self) -> Optional[str]:
        """What this entry's lambda means and where the shipped default comes from (``report.md``)."""
        return None

    # ----- hooks ---------------------------------------------------------------------------------
    def validate(self, layers: Sequence[Any]) -> None:
        """Fail before training for settings that cannot work on these layers (``LayerFactors``)."""

    def attach(self, module: Any) -> None:
        """Called once the adapters are injected (``configure_model``), e.g. to install forward hooks."""

    def loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Optional[Tensor]:
        """The unweighted loss term of this step (``out``: the task forward's ``TaskOutput``), or ``None``."""
        return None

    def before_optimizer_step(self, module: Any) -> dict[str, float]:
        """Rewrite the slot's ``.grad`` in place (summed, synced, unscaled, not yet clipped); values to log."""
        return {}

    def on_task_end(self, module: Any, stage: int, batches: TaskBatches) -> None:
        """``stage`` ended; its slot is still live and its optimizer not yet replaced."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state, but the checkpoint has {sorted(state)}")


METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Register a :class:`Method` subclass under ``name``, the name configs use."""

    def decorator(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"register_method needs a Method subclass, got {cls!r}")
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"a method named {name!r} is already registered")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigurationError(f"unknown method {name!r}; registered: {sorted(METHODS)}") from None


def _options(cls: type[Method]) -> list[inspect.Parameter]:
    skipped = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self" and p.kind not in skipped]


def describe_options(cls: type[Method]) -> str:
    """``"mode: Literal['delta_w', 'official'] = 'delta_w', ..."``: a method's options with types and defaults."""
    parts = []
    for p in _options(cls):
        kind = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
        parts.append(f"{p.name}: {kind}" + ("" if p.default is p.empty else f" = {p.default!r}"))
    return ", ".join(parts) or "none"


def full_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every option the entry leaves out at its default (unknown names: as given).

    Two entries that differ only in spelling out a default are the same method: checkpoints
    compare entries in this form.

    Example:
        >>> full_options("lwf", {})
        {'temperature': 2.0}
    """
    cls = METHODS.get(name)
    if cls is None:
        return dict(options)
    defaults = {p.name: p.default for p in _options(cls) if p.default is not p.empty}
    return {**defaults, **options}


def build_method(name: str, options: dict[str, Any]) -> Method:
    """Instantiate a registered method from its typed ``__init__``, with one clear error per bad option.

    Raises:
        ConfigurationError: For an unknown name, an unknown option (the message lists the method's
            options with their types and defaults) or a value the method refuses.
    """
    cls = get_method(name)
    allowed = {p.name for p in _options(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(f"method {name!r} has no option(s) {unknown}; its options are: {describe_options(cls)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"method {name!r}: {error}") from None


def zero_loss(module: Any) -> Tensor:
    """A float32 scalar zero on the module's device (a term with nothing to penalise yet)."""
    return torch.zeros((), device=module.device)

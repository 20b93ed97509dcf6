"""Loss terms that see the batch or keep state across tasks, and the task-end hook they share.

A factor regularizer (``regularizers/terms.py``) is a pure function of the adapters' factors. Some
methods need more: the batch (LwF distils the previous model's outputs on the current inputs) or
state filled at each task's end (EWC's Fisher and anchor). Such a method is one :class:`LossTerm`
subclass registered with :func:`register_loss_term`; its name is then used in ``model.regularizers``
like any regularizer (same ``weight``, ``task_weights`` and ``options``, logged as
``train/reg/<name>``, part of the checkpoint identity)::

    @register_loss_term("my_term")
    class MyTerm(LossTerm):
        def __init__(self, scale: float = 1.0):
            self.scale = scale

        def value(self, module, batch):
            return self.scale * sum(p.square().sum() for p in module.adapters.slot_parameters())

The module calls, per training step, ``observe`` around the task-loss forward and then ``value``;
at each task's end (``finish_task``, before the slot is frozen) ``on_task_end``; and it stores
``state_dict`` in its checkpoint.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence

import torch
from torch import Tensor

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.regularizers.config import RegularizerConfig
from nlora_lightning.regularizers.terms import get_regularizer, register_regularizer

__all__ = ["LOSS_TERMS", "LossTerm", "LossTerms", "check_adapter_modes", "register_loss_term"]


class LossTerm:
    """Base class of a loss term with access to the module, the batch and the task boundaries.

    Class attributes:
        adapters: The adapter modes (``per_task``, ``shared``) the term works with; others are refused
            when the module is built.
        adapters_reason: Why, for the error message.
    """

    name: ClassVar[str] = ""
    adapters: ClassVar[tuple[str, ...]] = ("per_task", "shared")
    adapters_reason: ClassVar[str] = ""

    def value(self, module: Any, batch: Optional[dict[str, Tensor]]) -> Tensor:
        """The term's unweighted value at this step (the module multiplies it by lambda)."""
        raise NotImplementedError

    @contextmanager
    def observe(self, module: Any) -> Iterator[None]:
        """Wraps the step's task-loss forward (e.g. to keep the student's logits). Default: nothing."""
        yield

    def on_task_end(self, module: Any, stage: int) -> None:
        """Called when ``stage`` ends, while its adapter is still the live slot. Default: nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"loss term {self.name!r} keeps no state, but the checkpoint has {sorted(state)}")


LOSS_TERMS: dict[str, type[LossTerm]] = {}


def register_loss_term(name: str) -> Callable[[type[LossTerm]], type[LossTerm]]:
    """Register a :class:`LossTerm` under ``name`` (shared with the regularizers' names)."""

    def decorator(cls: type[LossTerm]) -> type[LossTerm]:
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"register_loss_term needs a LossTerm subclass, got {cls!r}")
        register_regularizer(name)(cls)  # one namespace: unknown names and options are checked alike
        cls.name = name
        LOSS_TERMS[name] = cls
        return cls

    return decorator


def check_adapter_modes(configs: Sequence[RegularizerConfig], adapters: str) -> None:
    """Refuse terms that declare (``.adapters``) they cannot work with this adapter mode.

    Raises:
        ConfigurationError: Naming the term, the mode, the modes it supports and why.
    """
    for config in configs:
        term = get_regularizer(config.name)
        allowed = getattr(term, "adapters", None)
        if allowed is not None and adapters not in allowed:
            reason = getattr(term, "adapters_reason", "")
            raise ConfigurationError(
                f"regularizer {config.name!r} works with adapters {list(allowed)}, not adapters={adapters!r}"
                + (f": {reason}" if reason else "")
            )


class LossTerms:
    """The module's :class:`LossTerm` instances, built from its regularizer configs.

    Args:
        configs: The module's regularizer entries (factor regularizers among them are skipped).
        adapters: The module's adapter mode, checked against every entry's ``adapters``.

    Raises:
        ConfigurationError: For an adapter mode a term does not support, or unknown options.
    """

    def __init__(self, configs: Sequence[RegularizerConfig], adapters: str) -> None:
        if adapters != "none":
            check_adapter_modes(configs, adapters)
        self.terms: dict[str, LossTerm] = {}
        for config in configs:
            cls = LOSS_TERMS.get(config.name)
            if cls is None:
                continue
            try:
                self.terms[config.name] = cls(**config.options)
            except TypeError as error:
                raise ConfigurationError(f"regularizer {config.name!r}: bad options {config.options}: {error}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.terms

    def value(self, name: str, module: Any, batch: Optional[dict[str, Tensor]]) -> Tensor:
        return self.terms[name].value(module, batch)

    @contextmanager
    def observe(self, module: Any) -> Iterator[None]:
        with ExitStack() as stack:
            for term in self.terms.values():
                stack.enter_context(term.observe(module))
            yield

    def on_task_end(self, module: Any, stage: int) -> None:
        for term in self.terms.values():
            term.on_task_end(module, stage)

    def state_dict(self) -> dict[str, Any]:
        return {name: term.state_dict() for name, term in self.terms.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, term in self.terms.items():
            term.load_state_dict(state.get(name, {}))


def zero_like_module(module: Any) -> Tensor:
    """A float32 scalar zero on the module's device (a term with nothing to penalise yet)."""
    return torch.zeros((), device=module.device)

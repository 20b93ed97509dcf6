"""The gradient-transform extension point: a base class and the registry that makes transforms configurable.

A transform rewrites the trainable slot's gradients in place once per optimizer step, after the
backward passes (and AMP unscaling) and before gradient clipping and the step. It may read
statistics the forward pass recorded (MIGU) and keep state built at task ends (GORP); that state
travels in the module's checkpoint. Adding one is one file::

    @register_gradient_transform("sign_only")
    class SignOnly(GradientTransform):
        def apply(self, module):
            for layer in module.adapters.layers.values():
                for p in (layer.lora_A, layer.lora_B):
                    p.grad.sign_()
            return {}
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.gradients.config import GradientTransformConfig

if TYPE_CHECKING:  # the module imports transformers; transforms only need it at run time
    from nlora_lightning.module import ContinualLightningModule

__all__ = [
    "GRADIENT_TRANSFORMS",
    "GradientTransform",
    "build_gradient_transforms",
    "get_gradient_transform",
    "register_gradient_transform",
]


class GradientTransform:
    """Base class: every hook is a no-op, so a transform overrides only what it needs.

    Hooks, in the order a fit calls them:

    * :meth:`attach` once the adapters exist (e.g. switch on the layers' magnitude recording);
    * :meth:`apply` before every optimizer step, on the summed (accumulated, all-reduced, unscaled)
      gradients; returns scalars to log as ``train/grad/<name>/<key>``;
    * :meth:`on_task_end` when a task finishes, while that task's optimizer still exists;
    * :meth:`state_dict` / :meth:`load_state_dict` with the module's checkpoint.
    """

    name: str = ""

    def attach(self, module: "ContinualLightningModule") -> None:
        """Called once the adapters are injected (``configure_model``)."""

    def apply(self, module: "ContinualLightningModule") -> dict[str, float]:
        """Rewrite ``p.grad`` of the trainable parameters in place; return values to log."""
        return {}

    def on_task_end(self, module: "ContinualLightningModule", stage: int) -> None:
        """Called from ``finish_task(stage)`` before the slot is stored and the optimizer replaced."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


GRADIENT_TRANSFORMS: dict[str, type[GradientTransform]] = {}


def register_gradient_transform(name: str) -> Callable[[type[GradientTransform]], type[GradientTransform]]:
    def decorator(cls: type[GradientTransform]) -> type[GradientTransform]:
        if name in GRADIENT_TRANSFORMS:
            raise ValueError(f"a gradient transform named {name!r} is already registered")
        cls.name = name
        GRADIENT_TRANSFORMS[name] = cls
        return cls

    return decorator


def get_gradient_transform(name: str) -> type[GradientTransform]:
    try:
        return GRADIENT_TRANSFORMS[name]
    except KeyError:
        raise ConfigurationError(f"unknown gradient transform {name!r}; registered: {sorted(GRADIENT_TRANSFORMS)}") from None


def build_gradient_transforms(configs: Sequence[GradientTransformConfig], adapter_mode: str) -> list[GradientTransform]:
    """Instantiate the configured transforms, failing with one clear message per bad entry.

    Raises:
        ConfigurationError: For an unknown name, an unknown or invalid option, a name listed twice,
            or any transform with ``adapters='none'`` (the transforms act on the LoRA slot).
    """
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"gradient_transforms lists a transform twice: {names}")
    if configs and adapter_mode == "none":
        raise ConfigurationError(f"gradient transforms {names} act on LoRA adapters; adapters='none' has none")
    transforms = []
    for config in configs:
        cls = get_gradient_transform(config.name)
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(config.options) - set(allowed))
        if unknown:
            raise ConfigurationError(f"gradient transform {config.name!r} has no option(s) {unknown}; its options are {allowed}")
        try:
            transforms.append(cls(**config.options))
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"gradient transform {config.name!r}: {error}") from None
    return transforms

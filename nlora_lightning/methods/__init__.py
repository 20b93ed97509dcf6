"""Continual-learning methods: one base class (:class:`Method`), one registry, one file per method.

``model.methods`` lists the run's methods as :class:`MethodConfig` entries; importing this package
registers the shipped ones (``nlora_l1``, ``olora_orthogonality``, ``l2``, ``ella``, ``lwf``,
``ewc``, ``ewc_lora``, ``migu``, ``gorp``). ``python -m nlora_lightning.methods`` lists every
registered method with its typed options.
"""

from nlora_lightning.methods.base import METHODS, Method, TaskBatches, build_method, describe_options, get_method, register_method
from nlora_lightning.methods.config import (
    MethodConfig, check_method_defaults, compose_defaults_arguments, describe_lambda, merge_method_defaults, resolve_methods,
)
from nlora_lightning.methods.ella import ELLA
from nlora_lightning.methods.ewc import EWC
from nlora_lightning.methods.ewc_lora import EWCLoRA
from nlora_lightning.methods.gorp import GORP
from nlora_lightning.methods.l2 import L2
from nlora_lightning.methods.lwf import LwF
from nlora_lightning.methods.migu import MIGU
from nlora_lightning.methods.nlora_l1 import NLoRAL1
from nlora_lightning.methods.olora_orthogonality import OLoRAOrthogonality

__all__ = [
    "ELLA", "EWC", "EWCLoRA", "GORP", "L2", "LwF", "METHODS", "MIGU", "Method", "MethodConfig", "NLoRAL1",
    "OLoRAOrthogonality", "TaskBatches", "build_method", "check_method_defaults", "compose_defaults_arguments", "describe_lambda", "describe_options", "get_method",
    "merge_method_defaults", "register_method", "resolve_methods",
]

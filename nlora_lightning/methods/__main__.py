"""``python -m nlora_lightning.methods``: every registered method, its adapter modes, lambda keys and typed options."""

from nlora_lightning.methods import METHODS, describe_options

for name, cls in sorted(METHODS.items()):
    keys = ", ".join(cls.lambda_keys()) if cls.adds_loss else "none (adds no loss)"
    print(f"{name}  (adapters: {', '.join(cls.adapters)}; lambda keys: {keys})\n    options: {describe_options(cls)}")

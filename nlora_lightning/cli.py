"""The ``nlora`` command: LightningCLI (``fit``, ``validate``, ``test``) plus ``report``, ``compare``, ``export``.

    nlora fit --config configs/demo.yaml
    nlora fit --config configs/models/t5_large.yaml --config configs/benchmarks/standard_order1.yaml \\
              --config configs/methods/nlora.yaml --data.data_dir PATH
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from lightning.pytorch.cli import LightningCLI

from nlora_lightning.data.datamodule import TaskSequenceDataModule
from nlora_lightning.module import ContinualLightningModule

__all__ = ["NLoRACLI", "main"]

_TOOLS = ("report", "compare", "export")


class NLoRACLI(LightningCLI):
    """LightningCLI for continual runs.

    The optimizer is injected into the module (``--model.optimizer``) instead of being built by the
    CLI at start-up, because each task's adapter needs a fresh optimizer over its own parameters.
    """

    def __init__(self, args: Optional[Sequence[str]] = None, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # The task sequence sets max_epochs (stages x epochs per task); -1 only silences Lightning's default.
        kwargs.setdefault("trainer_defaults", {"max_epochs": -1})
        super().__init__(
            ContinualLightningModule,
            TaskSequenceDataModule,
            auto_configure_optimizers=False,
            args=args,
            **kwargs,
        )


def main(argv: Optional[Sequence[str]] = None) -> None:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in _TOOLS:
        from nlora_lightning.reporting.tools import run_tool

        raise SystemExit(run_tool(words[0], words[1:]))
    NLoRACLI(args=None if argv is None else words)


if __name__ == "__main__":
    main()

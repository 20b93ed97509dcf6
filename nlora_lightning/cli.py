"""The ``nlora`` command: LightningCLI (``fit``, ``validate``, ``test``) plus ``report``, ``compare``, ``export``.

    nlora fit --config configs/demo.yaml
    nlora fit --config configs/models/t5_large.yaml --config configs/benchmarks/standard_order1.yaml \\
              --config configs/methods/nlora.yaml --data.data_dir PATH
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, Optional, Sequence

from jsonargparse import ActionYesNo
from lightning.pytorch.cli import LightningCLI

from nlora_lightning.callbacks.forgetting_metrics import run_dir
from nlora_lightning.data.datamodule import TaskSequenceDataModule
from nlora_lightning.errors import NLoRAError
from nlora_lightning.module import ContinualLightningModule
from nlora_lightning.run_dir import guard_run_directory

__all__ = ["NLoRACLI", "main", "run"]

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

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--overwrite", action=ActionYesNo, default=False,
            help="replace a run already in the run directory (finished or not) instead of refusing",
        )

    def instantiate_classes(self) -> None:
        with _input_errors():
            super().instantiate_classes()

    def before_fit(self) -> None:
        """Check everything that can be checked before a file is written, then guard the run directory."""
        with _input_errors():
            self._check_before_fit()

    def _check_before_fit(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # Bad data, model, LoRA or regularizer settings fail now, before config.yaml or anything else is written.
        self.datamodule.load_tasks()
        self.model.check_configuration()
        self.datamodule.check_prompt_budget(self.model.tokenizer)
        directory = run_dir(self.trainer)
        checkpoint = resolve_checkpoint(config.get("ckpt_path"), self.trainer, directory)
        if checkpoint is not None:
            self._check_resumable(checkpoint)
        if self.trainer.global_rank == 0:  # DDP re-runs this command in every process; rank 0 owns the directory
            guard_run_directory(
                directory, resuming=checkpoint is not None, overwrite=bool(config.get("overwrite")),
                resume_requested=config.get("ckpt_path") == "last",
            )
        config["overwrite"] = False  # the saved config.yaml must not replace this run when rerun

    def _check_resumable(self, path: Path) -> None:
        import torch

        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.model.check_checkpoint(checkpoint)
        state = checkpoint.get(type(self.datamodule).__qualname__)
        if state is not None:
            self.datamodule.load_state_dict(state)  # compares the task sequence; raises on a mismatch


def resolve_checkpoint(ckpt_path, trainer, run_dir: Path) -> Optional[Path]:
    """The file a ``ckpt_path`` will resume from, or None (``last`` with no last.ckpt starts fresh)."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        folders = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        for folder in folders or [run_dir / "checkpoints"]:
            if (folder / "last.ckpt").is_file():
                return folder / "last.ckpt"
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path {str(ckpt_path)!r} does not exist")
    return path


@contextmanager
def _input_errors() -> Iterator[None]:
    """Marks any error raised inside as caused by the command's input (see ``run``)."""
    try:
        yield
    except Exception as error:
        with suppress(AttributeError):  # an exception type with __slots__
            error.nlora_input_error = True
        raise


def is_input_error(error: BaseException) -> bool:
    """True for the project's own errors and for anything raised while the command checked its input."""
    return isinstance(error, NLoRAError) or getattr(error, "nlora_input_error", False)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); errors propagate to the caller."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in _TOOLS:
        from nlora_lightning.reporting.tools import run_tool

        raise SystemExit(run_tool(words[0], words[1:]))
    NLoRACLI(args=None if argv is None else words)


def run() -> None:
    """Console entry point (``nlora``, ``python -m nlora_lightning``).

    An error caused by the input (bad data, settings, run directory, checkpoint) prints one line
    naming the cause and exits with status 1; a traceback would only bury that line. Set
    ``NLORA_TRACEBACK=1`` to get the traceback anyway. Any other error propagates unchanged.
    """
    try:
        main()
    except Exception as error:
        if not is_input_error(error) or os.environ.get("NLORA_TRACEBACK"):
            raise
        print(f"nlora: error: {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    run()

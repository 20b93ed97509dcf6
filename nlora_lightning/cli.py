"""The ``nlora`` command: LightningCLI (``fit``, ``validate``, ``test``) plus ``report``, ``compare``, ``export``.

    nlora fit --config configs/demo.yaml
    nlora fit --config configs/models/t5_large.yaml --config configs/benchmarks/standard_order1.yaml \\
              --config configs/methods/nlora.yaml --data.data_dir PATH
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, Optional, Sequence

from jsonargparse import ActionYesNo, Namespace
from lightning.pytorch.cli import LightningCLI

from nlora_lightning.callbacks.forgetting_metrics import run_dir
from nlora_lightning.data.datamodule import TaskSequenceDataModule
from nlora_lightning.errors import CheckpointError, CommandLineError, NLoRAError, RunDirectoryError
from nlora_lightning.module import ContinualLightningModule
from nlora_lightning.parse_errors import describe_parse_error
from nlora_lightning.run_dir import check_writable, guard_run_directory, run_state

__all__ = ["NLoRACLI", "main", "run"]

_TOOLS = ("report", "compare", "export")


class NLoRACLI(LightningCLI):
    """LightningCLI for continual runs.

    The optimizer is injected into the module (``--model.optimizer``) instead of being built by the
    CLI at start-up, because each task's adapter needs a fresh optimizer over its own parameters.
    """

    def __init__(self, args: Optional[Sequence[str]] = None, **kwargs) -> None:
        self._words = list(sys.argv[1:] if args is None else args) if not isinstance(args, (dict, Namespace)) else []
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

    def init_parser(self, **kwargs):
        kwargs.setdefault("exit_on_error", False)  # parse errors become one line (parse_arguments), not a usage dump
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as error:
            subcommand = next((w for w in self._words if w in self.subcommands()), None)
            known = _option_names(self._subcommand_parsers.get(subcommand)) if subcommand else []
            help_hint = f"nlora {subcommand} --help" if subcommand else "nlora --help"
            raise _mark(CommandLineError(f"{describe_parse_error(str(error), known)}; see: {help_hint}")) from None

    def _parse_ckpt_path(self) -> None:
        """Do not let the checkpoint's hyperparameters replace the command's model settings.

        LightningCLI would load them into the model config, so a different rank, method or
        regularizer given with ``--ckpt_path FILE`` would be silently replaced by the checkpoint's.
        The settings given are compared with the checkpoint's instead (``before_fit``).
        """

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if "trainer" in config:
            _logger_follows_default_root_dir(config["trainer"], self._words)

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
        ckpt_path, overwrite = config.get("ckpt_path"), bool(config.get("overwrite"))
        finished = run_state(directory) == "finished"
        # --overwrite with `last` on a finished run trains it again: the guard clears it, `last` then finds nothing.
        checkpoint = None if ckpt_path == "last" and finished and overwrite else resolve_checkpoint(ckpt_path, self.trainer, directory)
        if checkpoint is not None:
            self._check_resumable(checkpoint)  # first, so that changed settings are named
        if ckpt_path is not None and finished and not overwrite:  # job scripts that always pass `last` must be safe
            raise RunDirectoryError(f"run {directory} already finished: nothing to resume; pass --overwrite to train it again")
        if self.trainer.global_rank == 0:  # DDP re-runs this command in every process; rank 0 owns the directory
            for folder in {directory, *(Path(cb.dirpath) for cb in self.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None))}:
                check_writable(folder)
            guard_run_directory(directory, resuming=checkpoint is not None, overwrite=overwrite, resume_requested=ckpt_path == "last")
            print(f"nlora: run directory: {directory.resolve()}", file=sys.stderr)
        config["overwrite"] = False  # the saved config.yaml must not replace this run when rerun

    def _check_resumable(self, path: Path) -> None:
        import torch

        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling fails in many ways on a file that is no checkpoint
            raise CheckpointError(
                f"ckpt_path {str(path)!r} is not a checkpoint: torch.load(weights_only=True) cannot read it "
                f"({type(error).__name__}); give a .ckpt file written by nlora fit, or --ckpt_path last"
            ) from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(f"ckpt_path {str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry)")
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


def _option_names(parser) -> list[str]:
    """Every option the (sub)command accepts, dotted (``model.lora.r``), for 'did you mean'."""
    if parser is None:
        return []
    with suppress(Exception):
        return sorted(parser.get_defaults().keys())
    return []


def _logger_follows_default_root_dir(trainer: Namespace, words: Sequence[str]) -> None:
    """``--trainer.default_root_dir DIR`` on the command line moves the run directory to DIR.

    The shipped configs pin the logger's ``save_dir``/``name`` (the run directory is the logger's),
    which would otherwise ignore ``default_root_dir``. Logger options given on the command line win.
    """
    given = any(w == "--trainer.default_root_dir" or w.startswith("--trainer.default_root_dir=") for w in words)
    logger_given = any(w.startswith("--trainer.logger") for w in words)
    logger = trainer.get("logger")
    if isinstance(logger, list) and logger:  # a logger list (configs/loggers/): the first decides the run directory
        logger = logger[0]
    if not given or logger_given or not isinstance(logger, Namespace) or not isinstance(logger.get("init_args"), Namespace):
        return
    if "save_dir" in logger.init_args:
        logger.init_args.save_dir = trainer.default_root_dir
        logger.init_args.name = ""
        logger.init_args.version = ""


def _mark(error: BaseException) -> BaseException:
    with suppress(AttributeError):  # an exception type with __slots__
        error.nlora_input_error = True
    return error


@contextmanager
def _input_errors() -> Iterator[None]:
    """Marks any error raised inside as caused by the command's input (see ``run``)."""
    try:
        yield
    except Exception as error:
        _mark(error)
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

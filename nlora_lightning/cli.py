"""The ``nlora`` command: LightningCLI (``fit``, ``validate``, ``test``, ``predict``) plus ``report``, ``compare``, ``export``.

    nlora fit --config configs/demo.yaml
    nlora fit --config configs/models/t5_large.yaml --config configs/benchmarks/standard_order1.yaml \\
              --config configs/methods/nlora.yaml --data.data_dir PATH
    nlora test --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/last.ckpt

A fit holds a lock on its run directory (:mod:`nlora_lightning.run_lock`); SIGTERM and SIGINT end it
with status 143 and 130 and one line naming the checkpoint and the resume command
(:mod:`nlora_lightning.stop_signals`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from jsonargparse import ActionYesNo, Namespace
from lightning.pytorch.cli import LightningCLI

from nlora_lightning.console import quiet_third_party_notices
from nlora_lightning.data.datamodule import TaskSequenceDataModule
from nlora_lightning.errors import CheckpointError, CommandLineError, ConfigurationError, NLoRAError, RunDirectoryError
from nlora_lightning.methods.config import compose_defaults_arguments
from nlora_lightning.module import ContinualLightningModule
from nlora_lightning.parse_errors import describe_parse_error
from nlora_lightning.run_dir import check_writable, guard_run_directory, run_state
from nlora_lightning.run_layout import CHECKPOINTS, run_dir
from nlora_lightning.run_lock import RunLock
from nlora_lightning.stop_signals import StopSignals, exit_status, stop_message

__all__ = ["NLoRACLI", "main", "run"]

_TOOLS = ("report", "compare", "export")
_CHECKPOINT_COMMANDS = ("validate", "test", "predict")
# What `nlora --help` lists: every subcommand, one line each (`nlora SUBCOMMAND --help` gives its options).
SUBCOMMANDS = {
    "fit": "train a continual run over a task sequence: nlora fit --config configs/demo.yaml",
    "validate": "score a checkpoint's continual model on every task and held-out task (--ckpt_path FILE)",
    "test": "the same as validate; scores go to RUN/evaluations/test-<checkpoint>.json",
    "predict": "answer a JSONL file's sentences (--input FILE) or a task's test split (--task NAME) with a checkpoint",
    "report": "regenerate a run's report.md and plots: nlora report RUN_DIR",
    "compare": "compare runs side by side, means over runs of one protocol: nlora compare RUN_DIR...",
    "export": "export a run's per-task adapters in PEFT's format: nlora export RUN_DIR --out DIR",
}
# Set while a fit runs, for the line printed when a signal stops it.
_SESSION: dict[str, Any] = {}


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
            if isinstance(args, (dict, Namespace)):
                super().parse_arguments(parser, args)
            else:  # lambda defaults of composed configs merge key by key instead of replacing each other
                self.config = parser.parse_args(compose_defaults_arguments(sys.argv[1:] if args is None else args))
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
        if self.subcommand in _CHECKPOINT_COMMANDS and "trainer" in config:
            # Nothing of the run may change: no logger, config copy, checkpoint or callback writes into it;
            # Lightning's own files, if any, go to a scratch folder removed afterwards.
            self.save_config_callback = None
            self._scratch = tempfile.mkdtemp(prefix="nlora-")
            trainer = config["trainer"]
            trainer.logger, trainer.callbacks, trainer.enable_checkpointing = False, [], False
            trainer.default_root_dir = self._scratch

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--overwrite", action=ActionYesNo, default=False,
            help="replace a run already in the run directory (finished or not) instead of refusing",
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in _CHECKPOINT_COMMANDS:  # Lightning's text describes its own loop, not what nlora does
            parser.description = SUBCOMMANDS[subcommand]
        if subcommand == "predict":
            parser.add_argument("--input", default=None, help='JSONL file, one {"sentence", "task", "label"} per line '
                                '(task optional with --task, label optional); without it: --task\'s test split')
            parser.add_argument("--task", default=None, help="the task of lines that name none, or whose test split to answer")
            parser.add_argument("--out", default=None, help="where the answers go (default: RUN/evaluations/predict-...jsonl)")
        return parser

    # ----- validate / test / predict: a checkpoint's continual model ------------------------------
    def validate(self, model, datamodule=None, ckpt_path=None, **kwargs: Any) -> None:
        self._evaluate("validate", ckpt_path)

    def test(self, model, datamodule=None, ckpt_path=None, **kwargs: Any) -> None:
        self._evaluate("test", ckpt_path)

    def predict(self, model, datamodule=None, ckpt_path=None, **kwargs: Any) -> None:
        from nlora_lightning.checkpoint_commands import run_predict

        config = self.config[self.subcommand]
        with _input_errors():
            checkpoint = self._checkpoint_for("predict", ckpt_path)
        try:
            run_predict(self, checkpoint, config.get("input"), config.get("task"), config.get("out"))
        finally:
            shutil.rmtree(getattr(self, "_scratch", ""), ignore_errors=True)

    def _checkpoint_for(self, command: str, ckpt_path) -> Path:
        if ckpt_path is None:
            raise ConfigurationError(f"nlora {command} needs --ckpt_path FILE: a checkpoint written by nlora fit "
                                     "(e.g. RUN/checkpoints/last.ckpt)")
        checkpoint = resolve_checkpoint(ckpt_path, self.trainer, Path(self.trainer.default_root_dir))
        if checkpoint is None:
            raise CheckpointError(f"nlora {command}: --ckpt_path last needs the run's folder; give the file, "
                                  "e.g. --ckpt_path RUN/checkpoints/last.ckpt")
        self.datamodule.load_tasks()
        self._check_resumable(checkpoint, given=str(ckpt_path))
        return checkpoint

    def _evaluate(self, command: str, ckpt_path) -> None:
        from nlora_lightning.checkpoint_commands import run_evaluation

        with _input_errors():
            checkpoint = self._checkpoint_for(command, ckpt_path)
        try:
            run_evaluation(self, command, checkpoint)
        finally:
            shutil.rmtree(getattr(self, "_scratch", ""), ignore_errors=True)

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
        rank_zero = self.trainer.global_rank == 0  # DDP re-runs this command in every process; rank 0 owns the directory
        if rank_zero and directory.is_dir():
            # Before the run's state is read: a second job must not resume or clear what the first is writing.
            # (A new directory is created only once the checkpoint checks below pass.)
            _lock(directory)
        _SESSION.update(run_dir=directory, checkpoint_folders=_checkpoint_folders(self.trainer) or [directory / CHECKPOINTS])
        ckpt_path, overwrite = config.get("ckpt_path"), bool(config.get("overwrite"))
        finished = run_state(directory) == "finished"
        # --overwrite with `last` on a finished run trains it again: the guard clears it, `last` then finds nothing.
        checkpoint = None if ckpt_path == "last" and finished and overwrite else resolve_checkpoint(ckpt_path, self.trainer, directory)
        if checkpoint is not None:
            self._check_resumable(checkpoint, given=str(ckpt_path))  # first, so that changed settings are named
        if ckpt_path is not None and finished and not overwrite:  # job scripts that always pass `last` must be safe
            raise RunDirectoryError(f"run {directory} already finished: nothing to resume; pass --overwrite to train it again")
        if rank_zero:
            for folder in {directory, *_checkpoint_folders(self.trainer)}:
                check_writable(folder)
            _lock(directory)
            guard_run_directory(directory, resuming=checkpoint is not None, overwrite=overwrite, resume_requested=ckpt_path == "last")
            print(f"nlora: run directory: {directory.resolve()}", file=sys.stderr)
        config["overwrite"] = False  # the saved config.yaml must not replace this run when rerun

    def _check_resumable(self, path: Path, given: str = "") -> None:
        import torch

        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling fails in many ways on a file that is no checkpoint
            raise CheckpointError(unreadable_checkpoint_message(path, error, given)) from None
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
    if path.is_dir():
        inside = path / "last.ckpt" if (path / "last.ckpt").is_file() else path / CHECKPOINTS / "last.ckpt"
        hint = f"give the checkpoint file, e.g. --ckpt_path {inside}" if inside.is_file() else "give a .ckpt file written by nlora fit"
        raise CheckpointError(f"ckpt_path {str(ckpt_path)!r} is a folder, not a checkpoint file; {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path {str(ckpt_path)!r} does not exist")
    return path


def unreadable_checkpoint_message(path: Path, error: BaseException, given: str = "") -> str:
    """One line for a checkpoint torch cannot read: truncated, corrupt or no checkpoint, and what to do instead.

    ``given`` is what the user passed: for ``last`` the fix cannot be ``--ckpt_path last`` again.
    """
    import zipfile

    state = None  # a file torch writes is a zip archive: a zip without its end was cut off mid-write
    with suppress(OSError):
        with open(path, "rb") as handle:
            is_archive_start = handle.read(2) == b"PK"
        if is_archive_start and not zipfile.is_zipfile(path):
            state = "is truncated (its end is missing: the job writing it was probably stopped mid-save)"
        elif is_archive_start:
            state = "is corrupt (a complete archive whose content torch cannot read)"
    if given == "last":
        return (f"the run's last checkpoint '{path}' {state or 'cannot be read'} ({type(error).__name__}); delete it and "
                "resume from an earlier checkpoint file (--ckpt_path FILE), or start again with --overwrite")
    if state is None:
        state = "is not a checkpoint: torch.load(weights_only=True) cannot read it"
    return f"ckpt_path {str(path)!r} {state} ({type(error).__name__}); give a .ckpt file written by nlora fit, or --ckpt_path last"


def _lock(directory: Path) -> None:
    """Hold the run directory's lock for the rest of the command (released in ``main``)."""
    if "lock" not in _SESSION:
        _SESSION["lock"] = RunLock(directory)
    _SESSION["lock"].acquire()


def _checkpoint_folders(trainer) -> list[Path]:
    return [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]


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


def top_level_help() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: nlora SUBCOMMAND [options]    (nlora SUBCOMMAND --help lists its options)", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); errors propagate to the caller."""
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] in ("-h", "--help"):
        print(top_level_help())
        raise SystemExit(0 if words else 2)
    if words[0] in _TOOLS:
        from nlora_lightning.reporting.tools import run_tool

        raise SystemExit(run_tool(words[0], words[1:]))
    quiet_third_party_notices()
    try:
        NLoRACLI(args=None if argv is None else words)
    finally:
        lock = _SESSION.pop("lock", None)
        if lock is not None:
            lock.release()


def run() -> None:
    """Console entry point (``nlora``, ``python -m nlora_lightning``).

    An error caused by the input (bad data, settings, run directory, checkpoint) prints one line
    naming the cause and exits with status 1; a traceback would only bury that line. Set
    ``NLORA_TRACEBACK=1`` to get the traceback anyway. Any other error propagates unchanged.
    """
    signals = StopSignals().install()
    try:
        main()
    except BaseException as error:
        if signals.received is not None:  # stopped by SIGTERM/SIGINT, whatever Lightning turned that into
            print(_stopped_line(signals.received), file=sys.stderr)
            raise SystemExit(exit_status(signals.received)) from None
        if not isinstance(error, Exception) or not is_input_error(error) or os.environ.get("NLORA_TRACEBACK"):
            raise
        print(f"nlora: error: {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        signals.restore()


def _stopped_line(signum: int) -> str:
    words = sys.argv[1:]
    if not words or words[0] != "fit" or "checkpoint_folders" not in _SESSION:
        return f"nlora: stopped by {signal.Signals(signum).name}"
    found = [folder / "last.ckpt" for folder in _SESSION["checkpoint_folders"] if (folder / "last.ckpt").is_file()]
    return stop_message(signum, found[0].resolve() if found else None, words)


if __name__ == "__main__":
    run()

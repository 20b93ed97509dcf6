"""Shared by the gradient-transform run tests: fit a shipped method config on the tiny model."""

from pathlib import Path

import lightning.pytorch as pl
import pytest

from nlora_lightning.cli import NLoRACLI

REPO = Path(__file__).resolve().parents[2]


def _fit_method_on_tiny(method: str, probe: pl.Callback, tmp_path: Path, accelerator: str, *extra: str) -> NLoRACLI:
    """``configs/tiny.yaml`` + ``configs/methods/<method>.yaml``, no checkpoints or other callbacks, with ``probe``."""
    args = [
        "--config", str(REPO / "configs/tiny.yaml"), "--config", str(REPO / f"configs/methods/{method}.yaml"),
        "--trainer.accelerator", accelerator, "--trainer.default_root_dir", str(tmp_path / method),
        "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", method,
        "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", *extra,
    ]
    cli = NLoRACLI(args=args, run=False)
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


@pytest.fixture
def fit_method_on_tiny():
    return _fit_method_on_tiny

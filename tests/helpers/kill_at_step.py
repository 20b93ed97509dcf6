"""A callback that SIGKILLs its own process at a given global step (used by the resume test)."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """Kills the process, without any cleanup, when ``trainer.global_step`` reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)

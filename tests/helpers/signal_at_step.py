"""A callback that sends its own process a signal once, at a given global step (signal and lock tests)."""

import os
import signal
import time

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    """Sends ``signum`` (default SIGTERM) to the process when ``trainer.global_step`` reaches ``step``.

    ``wait_for`` (with ``signum=0``: no signal) holds the job there until that file exists, so that a
    test can run a second job while this one holds its run directory.
    """

    def __init__(self, step: int, signum: int = int(signal.SIGTERM), wait_for: str = "") -> None:
        self.step, self.signum, self.wait_for, self.sent = step, signum, wait_for, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step < self.step:
            return
        deadline = time.monotonic() + 300
        while self.wait_for and not os.path.exists(self.wait_for) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.signum and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

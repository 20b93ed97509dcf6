"""ContinualCheckpoint: when last.ckpt is written (a cheap BoringModel; the end-to-end resume is tests/test_resume.py)."""

from datetime import timedelta

import lightning.pytorch as pl
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from nlora_lightning.callbacks import ContinualCheckpoint

BATCHES, EPOCHS = 4, 2


class RecordingCheckpoint(ContinualCheckpoint):
    """Records the global step of every checkpoint written."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.saved_at: list[int] = []
        self.evaluations_before: list[int] = []  # how many evaluations had run when each checkpoint was written
        self._evaluations = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        self._evaluations += 1
        super().on_validation_end(trainer, pl_module)

    def _save_checkpoint(self, trainer, filepath) -> None:
        super()._save_checkpoint(trainer, filepath)
        self.saved_at.append(trainer.global_step)
        self.evaluations_before.append(self._evaluations)


def fit(tmp_path, **settings) -> RecordingCheckpoint:
    callback = RecordingCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, **settings)
    trainer = pl.Trainer(max_epochs=EPOCHS, limit_train_batches=BATCHES, limit_val_batches=1, callbacks=[callback],
                         logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(BoringModel())
    return callback


def test_last_is_written_after_every_epoch_with_save_top_k_zero(tmp_path):
    # Lightning's ModelCheckpoint writes nothing until the end with these settings; the train-end save
    # comes after the last task was finished.
    assert fit(tmp_path).saved_at == [4, 8, 8]
    assert (tmp_path / "last.ckpt").is_file()


def test_time_based_saves_inside_an_epoch_skip_its_last_batch(tmp_path):
    # An interval of 0 fires at every batch: every step is saved, the last batch of an epoch only by the
    # epoch-end save that follows its evaluation.
    saved = fit(tmp_path, train_time_interval=timedelta(0))
    assert saved.saved_at == [1, 2, 3, 4, 5, 6, 7, 8, 8]
    assert saved.evaluations_before == [0, 0, 0, 1, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("steps, expected", [(2, [2, 4, 6, 8, 8]), (4, [4, 8, 8])])
def test_step_based_saves_never_precede_the_epoch_end_evaluation(tmp_path, steps, expected):
    saved = fit(tmp_path, every_n_train_steps=steps)
    assert saved.saved_at == expected
    # each epoch's last step (4, 8) is saved only after that epoch's evaluation
    assert all(n == step // BATCHES for step, n in zip(saved.saved_at, saved.evaluations_before) if step % BATCHES == 0)


def test_time_and_step_based_saves_combine(tmp_path):
    # A config composed on a model config (train_time_interval) may add every_n_train_steps.
    saved = fit(tmp_path, every_n_train_steps=3, train_time_interval=timedelta(0))
    assert saved.saved_at == [1, 2, 3, 4, 5, 6, 7, 8, 8]
    assert fit(tmp_path, train_time_interval=timedelta(hours=1)).saved_at == [4, 8, 8]

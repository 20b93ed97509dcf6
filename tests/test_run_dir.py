"""Run-directory states and the guard that keeps a new fit from overwriting a run."""

import json
import os
from pathlib import Path

import pytest

from nlora_lightning.errors import RunDirectoryError
from nlora_lightning.run_dir import guard_run_directory, run_state


def make_run(directory: Path, status: str, checkpoint: bool) -> Path:
    directory.mkdir(parents=True)
    (directory / "run_info.json").write_text(json.dumps({"status": status}))
    (directory / "metrics.csv").write_text("step\n")
    if checkpoint:
        (directory / "checkpoints").mkdir()
        (directory / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return directory


def test_states(tmp_path):
    assert run_state(tmp_path / "missing") == "empty"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run file")
    assert run_state(tmp_path / "other") == "empty"
    assert run_state(make_run(tmp_path / "done", "finished", True)) == "finished"
    assert run_state(make_run(tmp_path / "running", "running", True)) == "unfinished"


def test_fresh_fit_over_a_run_is_refused_with_the_fix(tmp_path):
    with pytest.raises(RunDirectoryError, match="already holds a finished run; pass --overwrite"):
        guard_run_directory(make_run(tmp_path / "done", "finished", True), resuming=False, overwrite=False)
    with pytest.raises(RunDirectoryError, match="holds an unfinished run; resume it with --ckpt_path last"):
        guard_run_directory(make_run(tmp_path / "running", "running", True), resuming=False, overwrite=False)


def test_resume_requested_but_nothing_saved_says_so(tmp_path):
    directory = make_run(tmp_path / "early", "running", checkpoint=False)
    with pytest.raises(RunDirectoryError, match=r"--ckpt_path last: .* saved no checkpoint .* pass --overwrite"):
        guard_run_directory(directory, resuming=False, overwrite=False, resume_requested=True)
    # --ckpt_path last on an empty directory just starts, so job scripts can always pass it.
    guard_run_directory(tmp_path / "new", resuming=False, overwrite=False, resume_requested=True)


def test_overwrite_removes_only_run_files(tmp_path):
    directory = make_run(tmp_path / "done", "finished", True)
    (directory / "notes.txt").write_text("mine")
    guard_run_directory(directory, resuming=False, overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]


def test_unwritable_run_directory_is_named_with_its_cause(tmp_path, monkeypatch):
    from nlora_lightning import run_dir
    from nlora_lightning.errors import OutputDirectoryError

    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputDirectoryError, match=rf"cannot create the run directory {tmp_path}/a-file/run: {tmp_path}/a-file is a file"):
        run_dir.check_writable(tmp_path / "a-file" / "run")

    def refuse(**kwargs):  # what a read-only directory answers (root ignores chmod, so it is simulated)
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(run_dir.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputDirectoryError, match=rf"cannot write in the run directory {tmp_path}/ro: Permission denied"):
        run_dir.check_writable(tmp_path / "ro")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_directory_is_refused(tmp_path):
    from nlora_lightning.errors import OutputDirectoryError
    from nlora_lightning.run_dir import check_writable

    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        with pytest.raises(OutputDirectoryError, match="Permission denied"):
            check_writable(tmp_path / "ro")
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_overwrite_removes_every_file_the_old_run_wrote(tmp_path):
    """Issue 28 bug 6: predictions of stages the new run does not have stayed behind."""
    from nlora_lightning.run_layout import LOCK_FILE, RUN_FILES

    directory = make_run(tmp_path / "done", "finished", True)
    (directory / "predictions").mkdir()
    (directory / "predictions" / "stage14_task14.jsonl").write_text("{}\n")
    (directory / "predictions.jsonl").write_text("{}\n")
    (directory / "evaluations").mkdir()
    (directory / "evaluations" / "test-last.json").write_text("{}")
    (directory / "report.md").write_text("old")
    (directory / LOCK_FILE).write_text("{}")  # the lock of the job doing the overwrite stays
    (directory / "notes.txt").write_text("mine")
    guard_run_directory(directory, resuming=False, overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == [LOCK_FILE, "notes.txt"]
    assert {"predictions", "predictions.jsonl", "evaluations"} <= set(RUN_FILES) and LOCK_FILE not in RUN_FILES


def test_a_directory_holding_only_a_lock_is_empty(tmp_path):
    from nlora_lightning.run_layout import LOCK_FILE

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).write_text("{}")
    assert run_state(tmp_path / "run") == "empty"


def test_run_dir_of_checkpoint(tmp_path):
    from nlora_lightning.run_layout import run_dir_of_checkpoint

    assert run_dir_of_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt") == tmp_path / "run"
    assert run_dir_of_checkpoint(tmp_path / "elsewhere" / "x.ckpt") == tmp_path / "elsewhere"

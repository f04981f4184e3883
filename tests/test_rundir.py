"""The run directory: creation, the pid lock, and refusals to clobber or to resume nothing."""

import os
import subprocess

import pytest

from lmtrain.errors import RunDirectoryError
from lmtrain.training.rundir import RunDirectory, process_alive


def _finished_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_open_creates_directory_and_lock_then_removes_lock(tmp_path):
    path = tmp_path / "runs" / "a"
    with RunDirectory.open(path) as run:
        assert path.is_dir()
        assert run.path == path
        assert run.lock == path / ".lock"
        assert run.lock.read_text() == str(os.getpid())
        assert (run.last, run.best) == (path / "last.pt", path / "best.pt")
    assert not (path / ".lock").exists()
    assert list(path.iterdir()) == []  # the write probe is gone too


def test_lock_is_removed_when_the_body_raises(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with RunDirectory.open(tmp_path / "run"):
            raise RuntimeError("boom")
    assert not (tmp_path / "run" / ".lock").exists()


def test_lock_held_by_a_live_process_is_refused(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    other = subprocess.Popen(["sleep", "30"])
    try:
        (path / ".lock").write_text(str(other.pid))
        with pytest.raises(RunDirectoryError) as info:
            with RunDirectory.open(path):
                pass
        assert f"is in use by another training (pid {other.pid})" in str(info.value)
        assert (path / ".lock").read_text() == str(other.pid)  # the other process's lock is untouched
    finally:
        other.kill()
        other.wait()


def test_stale_lock_is_taken_over(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    dead = _finished_pid()
    assert not process_alive(dead)
    (path / ".lock").write_text(str(dead))
    with RunDirectory.open(path) as run:
        assert run.lock.read_text() == str(os.getpid())
    assert not (path / ".lock").exists()


@pytest.mark.parametrize("content", ["", "not a pid"])
def test_unreadable_lock_is_taken_over(tmp_path, content):
    path = tmp_path / "run"
    path.mkdir()
    (path / ".lock").write_text(content)
    with RunDirectory.open(path) as run:
        assert run.lock.read_text() == str(os.getpid())


def test_directory_with_a_run_is_refused(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"old")
    with pytest.raises(RunDirectoryError) as info:
        with RunDirectory.open(tmp_path):
            pass
    message = str(info.value)
    assert f"run_dir {tmp_path} already holds a run" in message
    assert "--resume" in message and "--overwrite" in message
    assert (tmp_path / "last.pt").read_bytes() == b"old"
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("name", ["best.pt", "config.yaml"])
def test_any_run_file_counts_as_a_run(tmp_path, name):
    (tmp_path / name).write_text("old")
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        with RunDirectory.open(tmp_path):
            pass


def test_overwrite_removes_the_previous_run(tmp_path):
    for name in ("last.pt", "best.pt", "config.yaml", "events.out.tfevents.1.host", "notes.txt"):
        (tmp_path / name).write_text("old")
    with RunDirectory.open(tmp_path, overwrite=True):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_resume_keeps_the_previous_run(tmp_path):
    for name in ("last.pt", "best.pt", "config.yaml", "events.out.tfevents.1.host"):
        (tmp_path / name).write_text("old")
    with RunDirectory.open(tmp_path, resume=True) as run:
        assert run.last.read_text() == "old"
    expected = ["best.pt", "config.yaml", "events.out.tfevents.1.host", "last.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected


def test_half_written_checkpoints_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / "last.pt").write_text("old")
    for name in (".last.pt.abc123.tmp", ".best.pt.x.tmp"):
        (tmp_path / name).write_text("half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")
    with RunDirectory.open(tmp_path, resume=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]


def test_resume_with_overwrite_keeps_the_run(tmp_path):
    (tmp_path / "last.pt").write_text("old")
    with RunDirectory.open(tmp_path, overwrite=True, resume=True):
        pass
    assert (tmp_path / "last.pt").read_text() == "old"


@pytest.mark.parametrize("exists", [True, False], ids=["empty-dir", "no-dir"])
def test_resume_without_last_checkpoint_is_refused(tmp_path, exists):
    path = tmp_path / "run"
    if exists:
        path.mkdir()
        (path / "best.pt").write_text("old")
    with pytest.raises(RunDirectoryError) as info:
        with RunDirectory.open(path, resume=True):
            pass
    assert str(info.value) == f"nothing to resume: {path / 'last.pt'} does not exist; start without --resume"
    assert not (path / ".lock").exists()


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a directory")
    with pytest.raises(RunDirectoryError, match=r"is a file; choose a directory"):
        with RunDirectory.open(path, overwrite=True):
            pass
    assert path.read_text() == "not a directory"


def test_run_dir_below_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match=r"is not writable"):
        with RunDirectory.open(tmp_path / "file" / "run"):
            pass


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores directory permissions, so chmod 0o500 cannot bite"
)
def test_non_writable_directory_is_refused(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    path.chmod(0o500)
    try:
        with pytest.raises(RunDirectoryError) as info:
            with RunDirectory.open(path):
                pass
        assert f"run_dir {path} is not writable (Permission denied)" in str(info.value)
    finally:
        path.chmod(0o700)


def test_write_config_replaces_atomically(tmp_path):
    with RunDirectory.open(tmp_path / "run") as run:
        run.write_config("a: 1\n")
        run.write_config("a: 2\n")
        assert (run.path / "config.yaml").read_text() == "a: 2\n"
        assert sorted(p.name for p in run.path.iterdir()) == [".lock", "config.yaml"]


def test_process_alive():
    assert process_alive(os.getpid())
    assert not process_alive(_finished_pid())

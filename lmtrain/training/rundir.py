"""The run directory: where one training run keeps its config, checkpoints and TensorBoard logs.

    runs/quickstart/
      config.yaml        the resolved config (every default spelled out)
      last.pt            the latest checkpoint (resume from it)
      best.pt            the checkpoint with the lowest validation loss (sample from it)
      events.out.tfevents.*   TensorBoard logs
      .lock              present while a training process uses the directory

Opening one refuses to clobber an earlier run (unless `overwrite`), refuses `resume` when there
is nothing to resume, checks that the directory is writable, and takes a lock so that two
trainings cannot write the same run at once. A lock or a half-written temporary checkpoint left by
a killed process (SIGKILL, power loss) is cleaned up by the next training that opens the directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmtrain.errors import RunDirectoryError

RUN_FILES = ("last.pt", "best.pt", "config.yaml")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDirectory:
    """An opened, locked run directory."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @classmethod
    @contextmanager
    def open(cls, path: Path, overwrite: bool = False, resume: bool = False) -> Iterator[RunDirectory]:
        run = cls(path)
        run.check_usable(resume)
        run.acquire_lock()
        try:
            run.check_no_earlier_run(overwrite, resume)
            run.remove_stale_temporaries()
            if overwrite and not resume:
                run.clear_previous_run()
            yield run
        finally:
            run.lock.unlink(missing_ok=True)

    def check_no_earlier_run(self, overwrite: bool, resume: bool) -> None:
        """Refuse to clobber an earlier run unless asked to overwrite or resume it."""
        has_run = any((self.path / name).exists() for name in RUN_FILES)
        if has_run and not (overwrite or resume):
            raise RunDirectoryError(
                f"run_dir {self.path} already holds a run; pass --resume to continue it, --overwrite to "
                "replace it, or choose another directory (run_dir=runs/NAME)"
            )

    def check_usable(self, resume: bool) -> None:
        """The path is (or can become) a writable directory, with a checkpoint if resuming."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"run_dir {self.path} is a file; choose a directory (run_dir=runs/NAME)")
        if resume and not self.last.exists():
            raise RunDirectoryError(f"nothing to resume: {self.last} does not exist; start without --resume")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise RunDirectoryError(
                f"run_dir {self.path} is not writable ({error.strerror}); choose another directory "
                "(run_dir=runs/NAME)"
            ) from None

    def acquire_lock(self) -> None:
        """Create `.lock` holding our pid; a lock left by a dead process is taken over."""
        for _ in range(2):
            try:
                descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = int(self.lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    owner = 0
                if owner and owner != os.getpid() and process_alive(owner):
                    raise RunDirectoryError(
                        f"run_dir {self.path} is in use by another training (pid {owner}); wait for it to "
                        "finish or choose another directory"
                    ) from None
                self.lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(str(os.getpid()))
            return
        raise RunDirectoryError(f"could not lock run_dir {self.path}; remove {self.lock} if no training runs")

    def remove_stale_temporaries(self) -> None:
        """Delete temporary checkpoint files (`.last.pt.*.tmp`) a killed training left behind.

        Holding the lock, we are the only writer, so any such file is a dead process's half-written save.
        """
        for name in ("last.pt", "best.pt"):
            for temporary in self.path.glob(f".{name}.*.tmp"):
                temporary.unlink(missing_ok=True)

    def clear_previous_run(self) -> None:
        """Remove an earlier run's checkpoints, config and TensorBoard logs (for --overwrite)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for events in self.path.glob("events.out.tfevents.*"):
            events.unlink()

    def write_config(self, text: str) -> None:
        temporary = self.path / ".config.yaml.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path / "config.yaml")

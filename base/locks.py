"""Per-output locks: one vilactl process at a time writes a given dataset, blend or run.

DuckDB's own lock guards the catalog file only while a connection is open, and commands keep
write connections short. An output (a dataset name, a checkpoint run, an eval folder) is
guarded for the whole command by an advisory `flock` on `<workspace>/.locks/<key>.lock`, taken
before the output folder or catalog is touched: a second process with the same output waits up
to VILACTL_LOCK_WAIT seconds, then stops with one line naming the holder. The kernel releases
the lock when its holder dies, so a killed run never leaves a stale lock. (flock needs a
filesystem that supports it; NFSv4 and local disks do.)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from vilactl.base.errors import VilactlError
from vilactl.base.paths import check_workspace
from vilactl.base.ranges import env_number

LOCK_WAIT_S = 30.0


def lock_wait() -> float:
    return env_number("VILACTL_LOCK_WAIT", LOCK_WAIT_S, 0, 10**7)


def _file(workspace: Path, key: str) -> Path:
    # keys are built from validated names, but the file name is made safe regardless
    return Path(workspace) / ".locks" / (re.sub(r"[^A-Za-z0-9_.@-]", "--", key) + ".lock")


@contextlib.contextmanager
def hold(workspace: str | Path, key: str, what: str) -> Iterator[None]:
    """Hold the lock for `key` for the block; `what` names the output in the refusal."""
    path = _file(check_workspace(workspace, write=True), key)
    try:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise VilactlError(f"{path}: cannot create the lock file: {e.strerror or e}") from None
    try:
        _acquire(fd, what, lock_wait())
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, what: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
                who = f" (PID {pid})" if pid.isdigit() else ""
                raise VilactlError(
                    f"{what} is being written by another vilactl process{who}; waited "
                    f"{wait_s:.0f} s — retry when it finishes (VILACTL_LOCK_WAIT sets the "
                    "wait)") from None
            time.sleep(0.1)


def held(workspace: str | Path, key: str) -> bool:
    """Whether some process (this one included) holds the lock for `key` now. A lock file
    that cannot be opened for another reason counts as held: never call a live run dead."""
    try:
        fd = os.open(_file(Path(workspace), key), os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    finally:
        os.close(fd)          # closing the descriptor releases a lock taken just now
    return False

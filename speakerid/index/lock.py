"""The one-writer lock of an index directory."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import IndexLockedError, IndexNotFoundError

__all__ = ["LOCK_FILE", "WriterLock"]

LOCK_FILE = ".lock"


class WriterLock:
    """Exclusive writer lock on an index directory (fcntl.flock on ``<dir>/.lock``).

    Waits up to ``wait_s`` seconds (None: forever) and then raises IndexLockedError. The
    kernel releases the lock when the holding process dies, so a crash never leaves it stale.
    Readers take no lock.
    """

    def __init__(self, directory: str | os.PathLike[str], *, wait_s: float | None = 0.0) -> None:
        self.path = Path(directory) / LOCK_FILE
        if not self.path.parent.is_dir():
            raise IndexNotFoundError(f"no speaker index at {self.path.parent}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        deadline = None if wait_s is None else time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise IndexLockedError(
                        f"{self.path.parent} is locked by another writer (pid {holder}); "
                        f"gave up after {wait_s:g} s"
                    ) from None
                time.sleep(0.05 if left is None else min(0.05, left))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

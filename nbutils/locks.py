"""One run at a time per run folder: a lock file that says who holds it.

Two runs of the same notebook with the same settings share a checkpoint folder; the
second would resume the first's checkpoint while the first still trains. :class:`RunLock`
takes an exclusive ``fcntl`` lock on ``<folder>/.lock`` for as long as the run trains
(the operating system drops it when the process dies, so a killed run never leaves a
stale lock) and writes the holder's process id, host and start time into it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RunLock", "RunLockedError"]

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the run folder."""


class RunLock:
    """``with RunLock(folder): ...`` -- a :class:`RunLockedError` if another run holds it."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking, as before
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"{self.path.parent} is in use by {holder}. Wait for that run to finish, "
                "or run with other settings (a -p override gives the run its own folder)."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the lock
            self._handle = None

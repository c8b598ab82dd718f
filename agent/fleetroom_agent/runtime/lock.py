"""One ``run`` per data directory.

Two agents on one data directory would share an identity and a counter file and
race for the same outbox rows; the second one must refuse to start.  The lock is
an OS advisory lock on ``run.lock`` (released by the kernel when the process dies,
kill -9 included, so there is never a stale lock to clean up by hand).
``fleetroom-agent status`` uses the same lock to tell whether ``run`` is active.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Final

LOCK_FILE: Final = "run.lock"
PROBE_GRACE_S: Final = 0.5
"""How long ``acquire`` keeps trying: :func:`holder_pid` (``status``) takes the same
lock for a few microseconds to probe it, and a ``run`` starting in that instant
must not mistake the probe for a running agent."""


class AlreadyRunning(RuntimeError):
    """Another process holds the data directory."""


def _try_lock(fh: IO[bytes]) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class RunLock:
    """Held for the lifetime of ``fleetroom-agent run``; writes the pid for humans."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fh: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning` naming the holder's pid."""
        fh = self.path.open("a+b")
        deadline = time.monotonic() + PROBE_GRACE_S
        while not (locked := _try_lock(fh)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not locked:
            fh.seek(0)
            holder = fh.read(32).decode(errors="replace").strip() or "?"
            fh.close()
            raise AlreadyRunning(f"another fleetroom-agent (pid {holder}) is running on "
                                 f"{self.path.parent}")
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()).encode())
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Let go (closing the file releases the OS lock)."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def holder_pid(data_dir: Path) -> int | None:
    """The pid of the running agent on ``data_dir``, or ``None`` when none runs."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return None
    with path.open("rb") as fh:
        if _try_lock(fh):
            return None  # nobody holds it (closing releases our probe lock)
        text = fh.read(32).decode(errors="replace").strip()
    return int(text) if text.isdigit() else -1

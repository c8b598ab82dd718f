"""Read the outbox's figures from another process (or thread) without ever writing.

``fleetroom-agent status`` and the local status page want queue depth and the
oldest unsent item while ``run`` owns the store.  :class:`~.store.Outbox` cannot be
used for that: its constructor is a writer's — it migrates the schema, quarantines
a file it believes corrupt (renaming the *live* store of the running agent away
from under it), creates the reserve file and would journal recovery gap records.
A status request must be able to do none of that, so this module opens the file
through SQLite's read-only URI and never through ``Outbox``.

What "never writes" takes with SQLite, found by trying (3.40):

* ``mode=ro`` on a WAL store creates ``-wal`` and ``-shm`` when they are missing
  (that is, whenever the agent is not running) and leaves them behind.  So when
  there is no ``-wal`` file the store is read with ``immutable=1`` (no locks, no
  side files) and the read is accepted only if the file's inode, size and mtime
  and the absence of a ``-wal`` are the same afterwards — a writer that started
  in between makes it retry the ordinary way.
* With a ``-wal`` (an agent is running, or died leaving one) the store is opened
  ``mode=ro&readonly_shm=1``: SQLite reads the WAL and the shared index but does
  not create either.  Plain ``mode=ro`` would not do: after a kill -9 it rebuilds
  the ``-shm`` in place, and without a ``-shm`` it creates one.  An agent that
  holds the store exclusively makes the short busy timeout expire, which is
  answered as :attr:`ReadState.BUSY`.
* ``PRAGMA query_only`` on top, so even a bug here cannot write.

Left over, and harmless: when the agent stops *while* a status read is attached,
SQLite does not fold the WAL back into the file at the agent's last close (it
only does so when no reader is attached), so ``-wal`` and ``-shm`` stay behind
with every committed item in them; the reader reads them, and the next ``run``
checkpoints and removes them.  The same happens if the agent's last connection
closes between the ``-wal`` check and SQLite's open (microseconds).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from fleetroom_agent.outbox.schema import APPLICATION_ID, SCHEMA_VERSION
from fleetroom_agent.outbox.store import OutboxStats, query_stats

#: How long a status request waits for a store another process holds exclusively.
DEFAULT_BUSY_TIMEOUT_MS: Final = 250
#: Reads that met a store changing under them are tried this often in all.
_ATTEMPTS: Final = 3
_RETRY_PAUSE_S: Final = 0.02
_SQLITE_HEADER: Final = b"SQLite format 3\x00"
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_CORRUPT_CODES: Final = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
#: SQLITE_READONLY_RECOVERY (8 | 1<<8) and SQLITE_READONLY_CANTINIT (8 | 5<<8).
_READONLY_WAIT_CODES: Final = frozenset({8 | 1 << 8, 8 | 5 << 8})


class ReadState(StrEnum):
    """What a read of the outbox found; only ``OK`` and ``EMPTY`` carry figures."""

    OK = "ok"
    #: The file does not exist: the agent has not stored anything yet.
    MISSING = "missing"
    #: The file exists but has no schema yet (created, not yet initialised).
    EMPTY = "empty"
    #: Another process holds the store exclusively, or it changed under every retry.
    BUSY = "busy"
    #: Not an SQLite database, or a damaged one; left exactly as it is.
    CORRUPT = "corrupt"
    #: An SQLite database, but not a Fleetroom outbox.
    FOREIGN = "foreign"
    #: Written by a newer agent; its figures cannot be trusted to mean the same.
    TOO_NEW = "too_new"
    #: Cannot be opened at all (permissions, a directory, missing ``-shm``, …).
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class OutboxReading:
    """The result of :func:`read_outbox_status`; never an exception for a bad store."""

    state: ReadState
    path: Path
    stats: OutboxStats | None = None
    #: For the states without figures: a sentence for a human.
    detail: str | None = None

    @property
    def ok(self) -> bool:
        """Whether :attr:`stats` holds figures (``OK`` or ``EMPTY``)."""
        return self.stats is not None


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _fingerprint(path: Path) -> tuple[int, int, int, int] | None:
    """What a writer changes: device, inode (a quarantine renames), size, mtime.

    ``None`` when there is no such file; other OS errors propagate.
    """
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _uri(path: Path, *, immutable: bool) -> str:
    # as_uri() percent-encodes '?', '#' and '%' in the path, so no path can add
    # URI parameters of its own (e.g. a directory named "x?mode=rwc").
    query = "mode=ro&immutable=1" if immutable else "mode=ro&readonly_shm=1"
    return f"{path.absolute().as_uri()}?{query}"


def _classify(path: Path, exc: sqlite3.Error) -> OutboxReading:
    """Turn an SQLite error into a state; the file is never touched."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    low = text.lower()
    if primary in _BUSY_CODES or "locked" in low or "busy" in low:
        return OutboxReading(ReadState.BUSY, path,
                             detail=f"the outbox is busy ({text}); ask again in a moment")
    if code in _READONLY_WAIT_CODES:
        # The shared WAL index needs a writer (the agent) to rebuild it first.
        return OutboxReading(ReadState.BUSY, path,
                             detail=f"the outbox's WAL index needs the agent first "
                                    f"({getattr(exc, 'sqlite_errorname', text)}); ask again")
    if primary in _CORRUPT_CODES or "malformed" in low or "not a database" in low:
        return OutboxReading(ReadState.CORRUPT, path,
                             detail=f"the outbox file is damaged ({text}); the agent "
                                    "quarantines it when it next opens the store")
    if "no such table" in low or "no such column" in low:
        return OutboxReading(ReadState.FOREIGN, path,
                             detail=f"{path.name} is not a Fleetroom outbox ({text})")
    if not path.exists():
        return OutboxReading(ReadState.MISSING, path, detail="no outbox yet")
    return OutboxReading(ReadState.UNREADABLE, path,
                         detail=f"cannot read the outbox ({text})")


def _query(path: Path, agent_id: str, *, immutable: bool, busy_timeout_ms: int,
           ) -> OutboxReading:
    conn = sqlite3.connect(_uri(path, immutable=immutable), uri=True, isolation_level=None,
                           timeout=busy_timeout_ms / 1000, check_same_thread=False)
    with contextlib.closing(conn):
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA query_only = 1")
        # One read transaction: the header and the figures come from one snapshot.
        conn.execute("BEGIN")
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if app_id not in (0, APPLICATION_ID) or (app_id == 0 and version != 0):
                return OutboxReading(
                    ReadState.FOREIGN, path,
                    detail=f"{path.name} is an SQLite database of another program "
                           f"(application id {app_id:#x}, not a Fleetroom outbox)")
            if version == 0:
                (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if tables:
                    return OutboxReading(
                        ReadState.FOREIGN, path,
                        detail=f"{path.name} has tables but no outbox schema version")
                return OutboxReading(ReadState.EMPTY, path, OutboxStats())
            if version > SCHEMA_VERSION:
                return OutboxReading(
                    ReadState.TOO_NEW, path,
                    detail=f"the outbox was written by a newer agent (schema {version}, "
                           f"this one reads up to {SCHEMA_VERSION})")
            stats = query_stats(conn, agent_id)
        finally:
            if conn.in_transaction:  # SQLite may have ended it already after an error
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
    return OutboxReading(ReadState.OK, path, stats)


def read_outbox_status(
    path: str | os.PathLike[str],
    agent_id: str,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
) -> OutboxReading:
    """Read the figures :meth:`.Outbox.stats` gives, without creating or changing anything.

    Safe to call from any process, per HTTP request, while ``run`` writes the
    store: it takes no write lock, never creates the file or its side files,
    never migrates, quarantines or journals.  Every problem is a
    :class:`ReadState` with a ``detail`` sentence, never an exception, so a
    status page stays up when the store is locked or damaged.
    """
    store = Path(path)
    reading = OutboxReading(ReadState.BUSY, store, detail="ask again in a moment")
    for _ in range(_ATTEMPTS):
        try:
            before = _fingerprint(store)
            if before is None:
                return OutboxReading(ReadState.MISSING, store, detail="no outbox yet")
            with store.open("rb") as fh:
                head = fh.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            return OutboxReading(ReadState.MISSING, store, detail="no outbox yet")
        except (OSError, ValueError) as exc:  # permissions, a directory, a NUL in the path
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            return OutboxReading(ReadState.UNREADABLE, store,
                                 detail=f"cannot read the outbox ({reason})")
        if head == b"":
            return OutboxReading(ReadState.EMPTY, store, OutboxStats())
        if head != _SQLITE_HEADER:
            return OutboxReading(ReadState.CORRUPT, store,
                                 detail=f"{store.name} is not an SQLite database; the agent "
                                        "quarantines it when it next opens the store")
        wal = _sidecar(store, "-wal")
        immutable = not wal.exists()
        try:
            reading = _query(store, agent_id, immutable=immutable,
                             busy_timeout_ms=busy_timeout_ms)
        except sqlite3.Error as exc:
            reading = _classify(store, exc)
            if (reading.state is ReadState.UNREADABLE and not immutable
                    and not _sidecar(store, "-shm").exists()):
                reading = OutboxReading(
                    ReadState.UNREADABLE, store,
                    detail=f"{wal.name} exists without its -shm file, which a reader may "
                           "not create; it is readable again once the agent has opened it")
        except (ValueError, TypeError) as exc:  # right header, values of the wrong kind
            reading = OutboxReading(ReadState.UNREADABLE, store,
                                    detail=f"the outbox holds values this agent cannot "
                                           f"read ({type(exc).__name__}: {exc})")
        if immutable and (wal.exists() or _fingerprint(store) != before):
            # A writer started or checkpointed meanwhile: read again, properly.
            reading = OutboxReading(ReadState.BUSY, store, detail="the outbox kept changing "
                                    "while it was read; ask again in a moment")
            continue
        if reading.state is ReadState.UNREADABLE and not immutable:
            # An agent opening or closing the store creates and removes -wal and -shm
            # one after the other; a moment later they are both there or both gone.
            time.sleep(_RETRY_PAUSE_S)
            continue
        return reading
    return reading

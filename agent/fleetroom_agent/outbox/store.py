"""The agent's store-and-forward outbox: a small SQLite queue that loses nothing silently.

Everything the agent wants the server to have goes through :class:`Outbox` first.
An item stays on disk until the server acknowledges it *at application level*
(after its own commit); only :meth:`Outbox.ack`, :meth:`Outbox.ack_ranges` and
:meth:`Outbox.ack_keys` delete rows. The only other ways a row can disappear are the
disk budget (coalescing and dropping) and quarantine of a corrupt file — and each of
those writes a gap record into the :data:`GAPS_STREAM` stream, delivered like any
other data, so the server can tell "never sent" from "lost, and here is why".

Design notes:

* Synchronous on purpose. The asyncio runtime calls it through
  ``asyncio.to_thread``; one connection guarded by a lock keeps it thread-safe and
  makes the seq assignment trivially race-free inside one process, while
  ``BEGIN IMMEDIATE`` plus ``busy_timeout`` keep several processes (e.g. the
  ``status`` command next to ``run``) correct too.
* ``journal_mode=WAL`` + ``synchronous=FULL``: once :meth:`Outbox.put` returns, the
  item survives a kill -9 and a power cut.
* Ordering uses ``seq`` (per stream) and the autoincrement ``id`` (across
  streams), never the wall clock, so a clock that jumps does not reorder or lose
  anything. ``created_at`` is informational (e.g. "oldest unsent item").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from fleetroom_agent.outbox.schema import migrate

log = logging.getLogger(__name__)

#: The stream that carries gap records; reserved for the outbox itself.
GAPS_STREAM: Final = "gaps"
#: File name of the outbox inside the agent's data directory.
DEFAULT_FILENAME: Final = "outbox.sqlite3"
#: Environment variable naming a journal file (see :class:`Outbox`); unset: no journal.
JOURNAL_ENV: Final = "FLEETROOM_AGENT_JOURNAL"

_T = TypeVar("_T")
_SQLITE_FULL: Final = 13
RESERVE_BYTES: Final = 1 << 20
"""Ballast file next to the store: given back when the disk is full, so that
acknowledged items can still be deleted (a delete needs WAL space too) and the
queue keeps moving instead of resending its first batch until someone frees space."""
WAL_LIMIT_BYTES: Final = 4 << 20
"""The WAL is truncated to this after checkpoints, so the budget stays meaningful."""
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26
_SQLITE_HEADER: Final = b"SQLite format 3\x00"


class Priority(IntEnum):
    """Delivery priority; lower values are sent first.

    ``CRITICAL`` items (device alerts that must reach the server within a minute,
    and gap records) are never coalesced or dropped by the disk budget.
    """

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


class GapReason:
    """Why items are missing; the ``reason`` field of a gap record."""

    COALESCED: Final = "coalesced"
    DISK_BUDGET: Final = "disk_budget"
    STORE_CORRUPT: Final = "store_corrupt"


class OutboxError(RuntimeError):
    """The outbox cannot be used (e.g. the data directory is not writable)."""


@dataclass(frozen=True, slots=True)
class ItemKey:
    """The part of the server's unique key ``(agent_id, stream, seq)`` the agent varies."""

    stream: str
    seq: int


@dataclass(frozen=True, slots=True)
class NewItem:
    """One item for :meth:`Outbox.put_many`; ``payload`` is already serialised."""

    stream: str
    payload: bytes
    priority: Priority = Priority.NORMAL
    #: Items of one stream sharing a key are cumulative (e.g. ``"counters:<device>"``):
    #: under disk pressure only the newest one per (stream, key) is kept.
    coalesce_key: str | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """A stored, not yet acknowledged item."""

    stream: str
    seq: int
    priority: Priority
    created_at: float
    payload: bytes
    coalesce_key: str | None = None

    @property
    def key(self) -> ItemKey:
        """The key to pass to :meth:`Outbox.ack_keys`."""
        return ItemKey(self.stream, self.seq)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Queue state of one stream."""

    count: int
    bytes: int
    last_seq: int
    oldest_created_at: float | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What ``fleetroom-agent status`` shows about the outbox."""

    streams: dict[str, StreamStats] = field(default_factory=dict)
    total_items: int = 0
    total_bytes: int = 0
    #: Wall-clock time of the oldest unacknowledged item (informational only).
    oldest_unsent_at: float | None = None
    budget_bytes: int | None = None
    #: Where a corrupt store was moved to when this instance opened, if it was.
    quarantined_to: Path | None = None


def _ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Compress sequence numbers into inclusive ``[first, last]`` runs."""
    out: list[list[int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Only corruption is quarantined; "locked", "readonly" or "full" are not."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in {_SQLITE_CORRUPT, _SQLITE_NOTADB}
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def query_stats(
    conn: sqlite3.Connection,
    agent_id: str,
    *,
    budget_bytes: int | None = None,
    quarantined_to: Path | None = None,
) -> OutboxStats:
    """The figures of :meth:`Outbox.stats`, read on any connection to the store.

    One function for the writer and for the read-only status reader
    (:mod:`.reader`), so both always count the same rows the same way.
    """
    rows = conn.execute(
        "SELECT s.stream, s.item_count, s.bytes, s.last_seq, "
        "(SELECT min(created_at) FROM items i WHERE i.agent_id = s.agent_id "
        "AND i.stream = s.stream) FROM streams s WHERE s.agent_id = ? ORDER BY s.stream",
        (agent_id,),
    ).fetchall()
    streams = {
        name: StreamStats(count=int(n), bytes=int(b), last_seq=int(last), oldest_created_at=o)
        for name, n, b, last, o in rows
    }
    oldest = [s.oldest_created_at for s in streams.values() if s.oldest_created_at is not None]
    return OutboxStats(
        streams=streams,
        total_items=sum(s.count for s in streams.values()),
        total_bytes=sum(s.bytes for s in streams.values()),
        oldest_unsent_at=min(oldest) if oldest else None,
        budget_bytes=budget_bytes,
        quarantined_to=quarantined_to,
    )


class CorruptStoreError(sqlite3.DatabaseError):
    """Raised internally when ``quick_check`` or the header says the file is damaged."""


class Outbox:
    """A durable, ordered, budgeted queue of items waiting for the server's ack.

    ``agent_id`` is stored with every row because it is part of the server's
    unique key; one file could in principle hold several identities (after a
    re-enrollment), and each :class:`Outbox` only sees its own.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        agent_id: str,
        *,
        budget_bytes: int | None = None,
        low_water_ratio: float = 0.9,
        busy_timeout_ms: int = 10_000,
        clock: Callable[[], float] = time.time,
        journal: str | os.PathLike[str] | None = None,
    ) -> None:
        """Open (creating, migrating or quarantining as needed) the store at ``path``.

        ``budget_bytes`` caps the total payload bytes; when exceeded, cumulative
        items are coalesced and then the oldest low-priority items dropped until
        the total is at most ``budget_bytes * low_water_ratio`` (the hysteresis
        keeps a full store from writing one gap record per ``put``).
        ``clock`` only stamps ``created_at``; it never decides order.

        ``journal`` (default: ``$FLEETROOM_AGENT_JOURNAL``; off when neither is set)
        names a side file that gets one JSON line per committed item — agent, store,
        stream, seq, priority, payload SHA-256, coalesce (device) key — appended and
        fsynced *after* the commit.  It is the ground truth the chaos tests compare
        with the server ("every committed item arrives exactly once"), and an audit
        trail for an operator chasing a lost reading.  A line can be missing only if
        the process dies between the commit and the append; a journal that cannot be
        written is logged and never fails the put (the item *is* committed, and a
        caller told otherwise might store it twice).
        """
        if not agent_id:
            msg = "agent_id must not be empty"
            raise ValueError(msg)
        if budget_bytes is not None and budget_bytes <= 0:
            msg = "budget_bytes must be positive"
            raise ValueError(msg)
        if not 0 < low_water_ratio <= 1:
            msg = "low_water_ratio must be in (0, 1]"
            raise ValueError(msg)
        self.path = Path(path)
        self.agent_id = agent_id
        self.budget_bytes = budget_bytes
        self.low_water_ratio = low_water_ratio
        self._busy_timeout_ms = busy_timeout_ms
        self._clock = clock
        self._lock = threading.RLock()
        self.quarantined_to: Path | None = None
        journal = journal if journal is not None else os.environ.get(JOURNAL_ENV) or None
        self.journal: Path | None = Path(journal) if journal is not None else None
        self._journal_pending: list[dict[str, object]] = []
        self._conn: sqlite3.Connection
        self._conn = self._open()
        self._ensure_reserve()

    @classmethod
    def in_data_dir(
        cls,
        data_dir: str | os.PathLike[str],
        agent_id: str,
        *,
        budget_bytes: int | None = None,
        low_water_ratio: float = 0.9,
    ) -> Self:
        """Open the outbox at its usual place inside the agent's data directory."""
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / DEFAULT_FILENAME, agent_id, budget_bytes=budget_bytes,
                   low_water_ratio=low_water_ratio)

    @property
    def store_id(self) -> str:
        """Random id of this store file, made when it was created.

        Part of the server's item key ``(agent, store, stream, seq)``: after a
        quarantine the fresh store has a new id, so its seqs can never be taken for
        repeats of the lost store's items — whatever the clock says.
        """
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
            if row:
                return str(row[0])
        with self._write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?) "
                         "ON CONFLICT (key) DO NOTHING", (secrets.token_hex(8),))
            return str(conn.execute("SELECT value FROM meta WHERE key = 'store_id'")
                       .fetchone()[0])

    # ------------------------------------------------------------------ opening

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so the
        # seq read-increment and the insert are one write transaction from the start.
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                msg = f"could not switch {self.path} to WAL (got {mode!r})"
                raise OutboxError(msg)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _check(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:5])
            raise CorruptStoreError(f"quick_check failed: {detail}")

    def _header_ok(self) -> bool:
        """A non-empty file must start with the SQLite magic; anything else is foreign."""
        try:
            with self.path.open("rb") as fh:
                head = fh.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            return True
        return head in {b"", _SQLITE_HEADER}

    def _open(self) -> sqlite3.Connection:
        """Open the store; quarantine it once if it is corrupt, never loop."""
        conn: sqlite3.Connection | None = None
        try:
            if not self._header_ok():
                raise CorruptStoreError("file does not start with the SQLite header")
            conn = self._connect()
            self._check(conn)
            migrate(conn)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if not isinstance(exc, CorruptStoreError) and not _is_corruption(exc):
                raise
            return self._recover(str(exc))
        self._conn = conn
        self._enforce_budget_now()
        return conn

    def _recover(self, detail: str) -> sqlite3.Connection:
        """Quarantine the damaged file, start a fresh store, and report the gap."""
        self.quarantined_to = self._quarantine()
        log.error("outbox %s is corrupt (%s); quarantined as %s", self.path, detail,
                  self.quarantined_to)
        conn = self._connect()
        migrate(conn)
        self._conn = conn
        # The server already holds seqs from the lost store; restarting at 1 would make
        # it discard new items as duplicates. We cannot know the old high-water mark,
        # so new seqs start above the current time in microseconds (only in this
        # recovery path does the clock matter; see raise_seq_floor for the fix-up).
        floor = int(self._clock() * 1_000_000)
        with self._write() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('seq_floor', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), "
                "excluded.value)",
                (str(floor),),
            )
            self._insert_gap(
                c,
                stream=None,
                seqs=[],
                reason=GapReason.STORE_CORRUPT,
                detail={"quarantined_as": self.quarantined_to.name, "error": detail[:500]},
            )
        return conn

    def _quarantine(self) -> Path:
        """Rename the file (and its WAL/SHM companions) to ``<name>.corrupt-<UTC time>``."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            self.path.rename(target)
            for suffix in ("-wal", "-shm"):
                companion = self.path.with_name(self.path.name + suffix)
                if companion.exists():
                    companion.rename(target.with_name(target.name + suffix))
        except OSError as exc:
            msg = f"cannot quarantine corrupt outbox {self.path}: {exc}"
            raise OutboxError(msg) from exc
        return target

    # ------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction under the instance lock."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                self._journal_pending.clear()
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                self._journal_pending.clear()
                raise
            if self._journal_pending:
                self._append_journal()

    def _append_journal(self) -> None:
        """Append the items just committed to the journal, fsynced (see ``__init__``)."""
        pending, self._journal_pending = self._journal_pending, []
        if self.journal is None:
            return
        try:
            store = self.store_id
            lines = "".join(json.dumps({"agent": self.agent_id, "store": store, **entry},
                                       sort_keys=True, separators=(",", ":")) + "\n"
                            for entry in pending).encode()
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines)  # one write: a kill cannot interleave two commits
                os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, sqlite3.Error) as exc:
            log.error("cannot append %d item(s) to the journal %s: %s", len(pending),
                      self.journal, exc)

    def _next_seq(self, conn: sqlite3.Connection, stream: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'seq_floor'").fetchone()
        floor = int(row[0]) if row else 0
        conn.execute(
            "INSERT INTO streams (agent_id, stream, last_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (agent_id, stream) DO NOTHING",
            (self.agent_id, stream, floor),
        )
        (seq,) = conn.execute(
            "UPDATE streams SET last_seq = last_seq + 1 WHERE agent_id = ? AND stream = ? "
            "RETURNING last_seq",
            (self.agent_id, stream),
        ).fetchone()
        return int(seq)

    def _insert(
        self,
        conn: sqlite3.Connection,
        stream: str,
        payload: bytes,
        priority: Priority,
        coalesce_key: str | None,
    ) -> int:
        seq = self._next_seq(conn, stream)
        conn.execute(
            "INSERT INTO items (agent_id, stream, seq, priority, created_at, coalesce_key, "
            "payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.agent_id, stream, seq, int(priority), self._clock(), coalesce_key,
             sqlite3.Binary(payload)),
        )
        if self.journal is not None:
            self._journal_pending.append({
                "stream": stream, "seq": seq, "priority": int(priority), "key": coalesce_key,
                "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)})
        return seq

    def _insert_gap(
        self,
        conn: sqlite3.Connection,
        *,
        stream: str | None,
        seqs: Sequence[int],
        reason: str,
        detail: dict[str, str] | None = None,
    ) -> int:
        """Write one gap record; it is itself CRITICAL so it can never be dropped.

        While the server is unreachable a full store would otherwise add one gap
        record per ``put`` until gap records alone fill the budget. So a pending
        (unacknowledged) gap record for the same stream and reason is merged into
        the new one: the old row is deleted and its seq listed in ``supersedes``,
        so the server can explain that hole in the gaps stream too. If the old
        record was already in flight, the server simply sees the same ranges twice.
        """
        all_seqs = set(seqs)
        supersedes: set[int] = set()
        key = None
        if stream is not None:
            key = f"gap:{reason}:{stream}"
            old = conn.execute(
                "SELECT id, seq, payload FROM items WHERE agent_id = ? AND stream = ? "
                "AND coalesce_key = ?",
                (self.agent_id, GAPS_STREAM, key),
            ).fetchall()
            for _, old_seq, old_payload in old:
                prev = json.loads(old_payload)
                for first, last in prev["ranges"]:
                    all_seqs.update(range(first, last + 1))
                for first, last in prev.get("supersedes", []):
                    supersedes.update(range(first, last + 1))
                supersedes.add(int(old_seq))
            self._delete_ids(conn, [r[0] for r in old])
        record: dict[str, object] = {
            "type": "gap",
            "agent_id": self.agent_id,
            "stream": stream,
            "reason": reason,
            "count": len(all_seqs),
            "first_seq": min(all_seqs) if all_seqs else None,
            "last_seq": max(all_seqs) if all_seqs else None,
            "ranges": _ranges(all_seqs),
        }
        if supersedes:
            record["supersedes"] = _ranges(supersedes)
        if detail:
            record["detail"] = detail
        payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        return self._insert(conn, GAPS_STREAM, payload, Priority.CRITICAL, key)

    # ---------------------------------------------------------------- public API

    @staticmethod
    def _validate(stream: str, payload: bytes) -> None:
        if not stream or not isinstance(stream, str):
            msg = "stream must be a non-empty string"
            raise ValueError(msg)
        if stream == GAPS_STREAM:
            msg = f"the {GAPS_STREAM!r} stream is written by the outbox only"
            raise ValueError(msg)
        if not isinstance(payload, bytes | bytearray | memoryview):
            msg = "payload must be bytes (serialise before putting)"
            raise TypeError(msg)

    def put(
        self,
        stream: str,
        payload: bytes,
        *,
        priority: Priority = Priority.NORMAL,
        coalesce_key: str | None = None,
    ) -> int:
        """Store one item durably and return its seq.

        When this returns, the item is committed with ``synchronous=FULL``; the seq
        is assigned in the same transaction, so a crash can neither lose a returned
        seq nor leave a seq without its item.
        """
        return self.put_many([NewItem(stream, payload, priority, coalesce_key)])[0]

    def put_many(self, items: Iterable[NewItem]) -> list[int]:
        """Store several items in one transaction (all or none); return their seqs."""
        batch = list(items)
        for it in batch:
            self._validate(it.stream, it.payload)
        if not batch:
            return []
        with self._write() as conn:
            seqs = [
                self._insert(conn, it.stream, bytes(it.payload), Priority(it.priority),
                             it.coalesce_key)
                for it in batch
            ]
            self._enforce_budget(conn)
        return seqs

    def next_batch(self, max_items: int = 500, max_bytes: int = 1_000_000) -> list[Item]:
        """Return the next items to send, without removing them.

        Order: priority first (critical alerts and gap records lead), then insertion
        order, which within a stream is seq order. The batch stops before the item
        that would exceed ``max_bytes`` — except that a single oversized item is
        returned alone, so it can never block the queue.
        """
        if max_items <= 0 or max_bytes <= 0:
            msg = "max_items and max_bytes must be positive"
            raise ValueError(msg)
        out: list[Item] = []
        size = 0
        with self._lock:
            cur = self._conn.execute(
                "SELECT stream, seq, priority, created_at, payload, coalesce_key FROM items "
                "WHERE agent_id = ? ORDER BY priority, id LIMIT ?",
                (self.agent_id, max_items),
            )
            for stream, seq, priority, created_at, payload, ckey in cur:
                if out and size + len(payload) > max_bytes:
                    break
                out.append(Item(stream, seq, Priority(priority), created_at, bytes(payload),
                                ckey))
                size += len(payload)
                if size >= max_bytes:
                    break
            cur.close()
        return out

    def ack(self, stream: str, up_to_seq: int) -> int:
        """Delete every item of ``stream`` with ``seq <= up_to_seq``; return how many.

        Use this for the server's cumulative acknowledgement, which it may only send
        once it has committed *every* seq up to ``up_to_seq`` of that stream.
        Acknowledging again (or an older seq) is harmless.
        """
        def delete() -> int:
            with self._write() as conn:
                cur = conn.execute(
                    "DELETE FROM items WHERE agent_id = ? AND stream = ? AND seq <= ?",
                    (self.agent_id, stream, up_to_seq),
                )
                return cur.rowcount

        return self._with_space(delete)

    def ack_keys(self, keys: Iterable[ItemKey]) -> int:
        """Delete exactly the acknowledged items; unknown or repeated keys are ignored."""
        return self.ack_ranges((k.stream, k.seq, k.seq) for k in keys)

    def ack_ranges(self, ranges: Iterable[tuple[str, int, int]]) -> int:
        """Delete the items ``first..last`` (inclusive) of each ``(stream, first, last)``.

        One transaction for all ranges, however large (the server's ``AckRange``s);
        items already gone or never stored are ignored.  Returns how many were deleted.
        """
        params = [(self.agent_id, stream, first, last) for stream, first, last in ranges]
        if not params:
            return 0

        def delete() -> int:
            with self._write() as conn:
                deleted = 0
                for p in params:
                    deleted += conn.execute(
                        "DELETE FROM items WHERE agent_id = ? AND stream = ? "
                        "AND seq BETWEEN ? AND ?", p
                    ).rowcount
                return deleted

        return self._with_space(delete)

    # ------------------------------------------------------------- disk space

    @property
    def _reserve_path(self) -> Path:
        return self.path.with_name(self.path.name + ".reserve")

    def _ensure_reserve(self) -> None:
        """Create the ballast file if it is missing (best effort: no space, no ballast)."""
        path = self._reserve_path
        if path.exists():
            return
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tmp.open("wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def _with_space(self, work: Callable[[], _T]) -> _T:
        """Run a deleting transaction; on a full disk give the ballast back and retry.

        Deleting frees space inside the file only after a checkpoint, but needs WAL
        space first: without the ballast a full disk would keep acknowledged items
        stuck and the sender resending them.
        """
        try:
            result = work()
        except sqlite3.OperationalError as exc:
            full = (getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL
                    or "full" in str(exc).lower())
            if not full or not self._reserve_path.exists():
                raise
            log.warning("disk full while deleting acknowledged items; using the reserve")
            self._reserve_path.unlink(missing_ok=True)
            result = work()
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._ensure_reserve()
        return result

    def raise_seq_floor(self, stream: str, seq: int) -> None:
        """Make the next seq of ``stream`` greater than ``seq``.

        For the server's high-water mark after a quarantine or a lost data
        directory: reused seqs would be taken for duplicates and discarded.
        """
        with self._write() as conn:
            conn.execute(
                "INSERT INTO streams (agent_id, stream, last_seq) VALUES (?, ?, ?) "
                "ON CONFLICT (agent_id, stream) DO UPDATE "
                "SET last_seq = max(last_seq, excluded.last_seq)",
                (self.agent_id, stream, seq),
            )

    def enforce_budget(self) -> None:
        """Apply the disk budget now (it is also applied on open and on every put)."""
        with self._write() as conn:
            self._enforce_budget(conn)

    def _enforce_budget_now(self) -> None:
        if self.budget_bytes is not None:
            self.enforce_budget()

    def _total_bytes(self, conn: sqlite3.Connection) -> int:
        (total,) = conn.execute(
            "SELECT coalesce(sum(bytes), 0) FROM streams WHERE agent_id = ?", (self.agent_id,)
        ).fetchone()
        return int(total)

    def _delete_ids(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])

    def _enforce_budget(self, conn: sqlite3.Connection) -> None:
        """Coalesce, then drop the oldest low-priority items; gap-record every removal.

        Runs inside the caller's write transaction, so the removals and their gap
        records commit together with the put that triggered them, or not at all.
        Gap records written here are not re-checked in the same pass (they are
        small and critical); critical items are never removed, so a store full of
        critical items stays above budget rather than losing alerts.
        """
        budget = self.budget_bytes
        if budget is None or self._total_bytes(conn) <= budget:
            return
        # 1. Coalesce: keep only the newest item per (stream, coalesce_key); never remove
        #    a critical one.
        rows = conn.execute(
            "SELECT id, stream, seq FROM items WHERE agent_id = ? AND coalesce_key IS NOT NULL "
            "AND priority != ? AND id NOT IN (SELECT max(id) FROM items WHERE agent_id = ? "
            "AND coalesce_key IS NOT NULL GROUP BY stream, coalesce_key) ORDER BY id",
            (self.agent_id, int(Priority.CRITICAL), self.agent_id),
        ).fetchall()
        self._remove_with_gaps(conn, rows, GapReason.COALESCED)
        total = self._total_bytes(conn)
        if total <= budget:
            return
        # 2. Drop the oldest items of the lowest priority until under the low-water mark.
        target = int(budget * self.low_water_ratio)
        victims: list[tuple[int, str, int]] = []
        freed = 0
        cur = conn.execute(
            "SELECT id, stream, seq, length(payload) FROM items WHERE agent_id = ? "
            "AND priority != ? ORDER BY priority DESC, id",
            (self.agent_id, int(Priority.CRITICAL)),
        )
        for item_id, stream, seq, size in cur:
            if total - freed <= target:
                break
            victims.append((item_id, stream, seq))
            freed += size
        cur.close()
        self._remove_with_gaps(conn, victims, GapReason.DISK_BUDGET)
        if victims:
            log.warning("outbox over budget: dropped %d items (%d bytes), gap recorded",
                        len(victims), freed)

    def _remove_with_gaps(
        self, conn: sqlite3.Connection, rows: Sequence[tuple[int, str, int]], reason: str
    ) -> None:
        if not rows:
            return
        self._delete_ids(conn, [r[0] for r in rows])
        by_stream: dict[str, list[int]] = {}
        for _, stream, seq in rows:
            by_stream.setdefault(stream, []).append(seq)
        for stream, seqs in sorted(by_stream.items()):
            self._insert_gap(conn, stream=stream, seqs=seqs, reason=reason)

    def stats(self) -> OutboxStats:
        """Queue depth and bytes per stream, and the oldest unsent item's time."""
        with self._lock:
            return query_stats(self._conn, self.agent_id, budget_bytes=self.budget_bytes,
                               quarantined_to=self.quarantined_to)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the connection (a checkpoint folds the WAL back into the file)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""What the running agent knows about itself, and how another process reads it.

``fleetroom-agent status --json`` and the local status page must answer while
``run`` is busy in another process, without talking to it (there is no control
socket: the agent listens on nothing but its loopback status page).  So:

* queue depth and the oldest unsent item come straight from the outbox file,
  read-only (:func:`..outbox.read_outbox_status`: never an ``Outbox``, whose
  constructor may migrate, quarantine or create files);
* everything else — last acknowledgement, last errors, schedule, transports,
  devices, jobs — the runtime writes to ``state.json`` every few seconds
  (atomically, see :mod:`.jsonfile`);
* whether ``run`` is active at all comes from its lock (:mod:`.lock`), not from a
  pid that may have been reused.

The reading side (the document ``status --json`` and the status page show) is
:func:`.status_read.read_status`.
"""

from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..outbox import OutboxStats
from .jsonfile import write_json

log = logging.getLogger(__name__)

STATE_FILE: Final = "state.json"
MAX_ERRORS: Final = 20
STATUS_SCHEMA: Final = "fleetroom.agent-status/1"


def utcnow() -> datetime:
    """Wall clock in UTC (informational only: shown to humans, never decides anything)."""
    return datetime.now(UTC)


def iso(ts: float | datetime | None) -> str | None:
    """ISO 8601 in UTC, or ``None``."""
    if ts is None:
        return None
    if isinstance(ts, datetime):
        return ts.astimezone(UTC).isoformat(timespec="seconds")
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass
class ErrorRecord:
    """One thing that went wrong (kept in a short ring; the log has the rest)."""

    at: str
    where: str
    message: str


@dataclass
class JobRecord:
    """The last run of one job."""

    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    outcome: str | None = None
    detail: str = ""


@dataclass
class RuntimeState:
    """In-process facts the runtime updates as it works."""

    started_at: str = field(default_factory=lambda: iso(utcnow()) or "")
    errors: collections.deque[ErrorRecord] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_ERRORS))
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=collections.Counter)
    profiles: dict[str, Any] = field(default_factory=dict)

    def error(self, where: str, message: str) -> None:
        """Remember an error (message must already be free of secrets)."""
        self.errors.append(ErrorRecord(iso(utcnow()) or "", where, message[:500]))

    @property
    def last_error(self) -> str | None:
        """``where: message`` of the newest error."""
        if not self.errors:
            return None
        e = self.errors[-1]
        return f"{e.where}: {e.message}"

    def job_started(self, name: str) -> None:
        """Note that ``name`` started."""
        rec = self.jobs.setdefault(name, JobRecord())
        rec.started_at = iso(utcnow())
        rec.finished_at = None

    def job_finished(self, name: str, outcome: str, seconds: float, detail: str = "") -> None:
        """Note how ``name`` ended."""
        rec = self.jobs.setdefault(name, JobRecord())
        rec.finished_at = iso(utcnow())
        rec.seconds = round(seconds, 3)
        rec.outcome = outcome
        rec.detail = detail[:300]

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``key``."""
        self.counts[key] = self.counts.get(key, 0) + n

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for ``state.json``."""
        return {
            "started_at": self.started_at,
            "errors": [vars(e) for e in self.errors],
            "last_error": self.last_error,
            "jobs": {k: vars(v) for k, v in sorted(self.jobs.items())},
            "counts": dict(sorted(self.counts.items())),
            "profiles": self.profiles,
        }


def write_state(data_dir: Path, data: dict[str, Any]) -> None:
    """Write ``state.json`` (the runtime calls this every few seconds and at exit).

    Not fsynced: it is rewritten every few seconds and only shows what the runtime
    holds in memory anyway; an fsync per rewrite would wear the disk for nothing."""
    write_json(data_dir / STATE_FILE, {**data, "written_at": iso(utcnow()),
                                       "pid": os.getpid()}, durable=False)


def outbox_summary(stats: OutboxStats) -> dict[str, Any]:
    """Queue depth per stream, bytes, the oldest unsent item."""
    return {
        "queue_items": stats.total_items,
        "queue_bytes": stats.total_bytes,
        "oldest_unsent_at": iso(stats.oldest_unsent_at),
        "budget_bytes": stats.budget_bytes,
        "streams": {name: {"items": s.count, "bytes": s.bytes, "last_seq": s.last_seq,
                           "oldest_unsent_at": iso(s.oldest_created_at)}
                    for name, s in stats.streams.items()},
    }

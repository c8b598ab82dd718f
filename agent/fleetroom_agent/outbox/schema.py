"""On-disk schema of the outbox and the steps that migrate it.

The schema version lives in ``PRAGMA user_version`` (part of the database header,
so it changes atomically with the DDL of the same transaction). Each entry of
:data:`MIGRATIONS` moves the schema from ``version - 1`` to ``version``; a store
written by a newer agent is refused rather than guessed at, because an older agent
cannot know what a newer column means for delivery.

Why the shape is what it is:

* ``items.id`` (``AUTOINCREMENT``, never reused) is the global insertion order used
  to interleave streams; ``seq`` is the per-stream sequence the server deduplicates
  on. Neither depends on the wall clock.
* ``streams.last_seq`` is kept even when every item of a stream has been
  acknowledged and deleted, so a sequence number is never handed out twice.
* ``streams.item_count`` / ``streams.bytes`` are maintained by triggers, so every
  delete path (ack, coalescing, budget drops) keeps them right and the disk budget
  can be checked on every ``put`` without a full-table ``SUM``.
"""

from __future__ import annotations

import sqlite3
from typing import Final

#: The application id written into the header; marks the file as a Fleetroom outbox.
APPLICATION_ID: Final = 0x464C5242  # "FLRB"

_V1: Final[tuple[str, ...]] = (
    """
    CREATE TABLE streams (
        agent_id   TEXT    NOT NULL,
        stream     TEXT    NOT NULL,
        last_seq   INTEGER NOT NULL DEFAULT 0,
        item_count INTEGER NOT NULL DEFAULT 0,
        bytes      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (agent_id, stream)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE items (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id     TEXT    NOT NULL,
        stream       TEXT    NOT NULL,
        seq          INTEGER NOT NULL,
        priority     INTEGER NOT NULL,
        created_at   REAL    NOT NULL,
        coalesce_key TEXT,
        payload      BLOB    NOT NULL,
        UNIQUE (agent_id, stream, seq)
    )
    """,
    "CREATE INDEX items_delivery ON items (agent_id, priority, id)",
    """
    CREATE INDEX items_coalesce ON items (agent_id, coalesce_key, id)
        WHERE coalesce_key IS NOT NULL
    """,
    """
    CREATE TRIGGER items_after_insert AFTER INSERT ON items BEGIN
        UPDATE streams
           SET item_count = item_count + 1, bytes = bytes + length(NEW.payload)
         WHERE agent_id = NEW.agent_id AND stream = NEW.stream;
    END
    """,
    """
    CREATE TRIGGER items_after_delete AFTER DELETE ON items BEGIN
        UPDATE streams
           SET item_count = item_count - 1, bytes = bytes - length(OLD.payload)
         WHERE agent_id = OLD.agent_id AND stream = OLD.stream;
    END
    """,
    # Key/value facts about the store itself, e.g. the sequence floor after a quarantine.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)

#: ``MIGRATIONS[n]`` upgrades a store from version ``n - 1`` to ``n``.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {1: _V1}

#: The version this code writes and fully understands.
SCHEMA_VERSION: Final = max(MIGRATIONS)


class SchemaTooNewError(RuntimeError):
    """The store was written by a newer agent; refusing is safer than guessing."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema on ``conn`` up to :data:`SCHEMA_VERSION`; return the old version.

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with the
    ``user_version`` bump, so a crash mid-migration leaves the previous version
    intact. ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current > SCHEMA_VERSION:
        msg = f"outbox schema version {current} is newer than this agent ({SCHEMA_VERSION})"
        raise SchemaTooNewError(msg)
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            (again,) = conn.execute("PRAGMA user_version").fetchone()
            if again >= version:  # another process migrated while we waited for the lock
                conn.execute("ROLLBACK")
                continue
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(current)

"""Local store-and-forward outbox: nothing leaves the agent's disk before the server has it.

See :mod:`.store` for the guarantees (durable put, delete only on application-level
acknowledgement, disk budget with gap records, quarantine of corrupt files),
:mod:`.schema` for the on-disk layout and its migrations, and :mod:`.reader` for the
read-only view ``status`` and the status page use (it never opens an :class:`Outbox`).
"""

from fleetroom_agent.outbox.reader import OutboxReading, ReadState, read_outbox_status
from fleetroom_agent.outbox.store import (
    DEFAULT_FILENAME,
    GAPS_STREAM,
    GapReason,
    Item,
    ItemKey,
    NewItem,
    Outbox,
    OutboxError,
    OutboxStats,
    Priority,
    StreamStats,
)

__all__ = [
    "DEFAULT_FILENAME",
    "GAPS_STREAM",
    "GapReason",
    "Item",
    "ItemKey",
    "NewItem",
    "Outbox",
    "OutboxError",
    "OutboxReading",
    "OutboxStats",
    "Priority",
    "ReadState",
    "StreamStats",
    "read_outbox_status",
]

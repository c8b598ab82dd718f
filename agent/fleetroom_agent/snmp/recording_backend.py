"""An in-process SNMP back-end that answers from a recording file.

It lets a technician run ``probe --recording FILE`` to see what a profile makes
of a recorded device without the device or a simulator — the fast loop for
writing a profile.  It follows SNMP semantics (absent OIDs, walk order, subtree
bounds), but it is not a network and is never used to test the network client.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path

from ..snmprec import oid_key, read_recording
from .types import (
    Absent,
    Credential,
    Result,
    SnmpError,
    SnmpValue,
    Target,
    Timing,
    WalkResult,
)


class RecordingClient:
    """Serves one recording for any target and credential."""

    def __init__(self, path: Path) -> None:
        self._values = read_recording(path)
        self._order = sorted(self._values, key=oid_key)
        self._keys = [oid_key(o) for o in self._order]

    async def get(self, target: Target, credential: Credential, oids: Sequence[str],
                  timing: Timing | None = None) -> dict[str, Result]:
        """Each OID's value, or noSuchObject."""
        return {o: self._values.get(o, Absent.NO_SUCH_OBJECT) for o in oids}

    async def walk(self, target: Target, credential: Credential, root: str,
                   timing: Timing | None = None) -> WalkResult:
        """Rows under ``root`` in SNMP order, capped at ``max_walk_rows``."""
        limit = (timing or Timing()).max_walk_rows
        start = bisect.bisect_right(self._keys, oid_key(root))
        rows: list[tuple[str, SnmpValue]] = []
        prefix = root + "."
        for oid in self._order[start:]:
            if not oid.startswith(prefix):
                break
            if len(rows) >= limit:
                return WalkResult(rows, "max-rows")
            rows.append((oid, self._values[oid]))
        return WalkResult(rows)

    async def walk_many(self, target: Target, credential: Credential, roots: Sequence[str],
                        timing: Timing | None = None) -> dict[str, WalkResult | SnmpError]:
        """Each root walked on its own (no PDUs to save here)."""
        return {root: await self.walk(target, credential, root, timing) for root in roots}

    async def close(self) -> None:
        """Nothing to release."""

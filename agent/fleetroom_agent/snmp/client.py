"""The SNMP client interface collection code uses.

Read-only by construction: the interface has no ``set`` and the back-end module
never builds a SetRequest PDU (``tests/test_snmp_readonly.py`` proves it on the
wire).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .types import Credential, Result, SnmpError, Target, Timing, WalkResult


class SnmpClient(Protocol):
    """What collection needs from SNMP, and nothing more."""

    async def get(self, target: Target, credential: Credential, oids: Sequence[str],
                  timing: Timing | None = None) -> dict[str, Result]:
        """GET every OID; each maps to its value or an :class:`Absent` reason.

        With v1, a PDU failing on one OID (noSuchName) is retried per OID so the
        others still come back.  Raises :class:`SnmpError` when the device does not
        answer at all (timeout, auth failure, deadline)."""
        ...

    async def walk(self, target: Target, credential: Credential, root: str,
                   timing: Timing | None = None) -> WalkResult:
        """All (oid, value) under ``root``, in order, bounded to the subtree.

        GETBULK for v2c/v3, GETNEXT for v1.  Stops at endOfMibView, at the first OID
        outside the subtree, at an OID that does not increase (a broken agent), and
        at ``timing.max_walk_rows``; stopping early is not an error (the reason is in
        ``WalkResult.stopped``), a device that never answers is."""
        ...

    async def walk_many(self, target: Target, credential: Credential, roots: Sequence[str],
                        timing: Timing | None = None) -> dict[str, WalkResult | SnmpError]:
        """Every subtree of ``roots``, each as :meth:`walk` would return it, in as few
        PDUs as the back-end can manage (a device's tables are read in one stream
        rather than one walk each: the PDU count, not the rows, was the cost).

        A subtree the device stopped answering before it was reached maps to the
        :class:`SnmpError` that stopped it (nothing is known about it); a device
        that never answers at all raises, as :meth:`walk` does."""
        ...

    async def close(self) -> None:
        """Release sockets and the engine."""
        ...

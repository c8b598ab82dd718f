"""Raw answers from one device, before interpretation."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..snmp.types import Absent, Result, SnmpValue, WalkResult


@dataclass
class DeviceSnapshot:
    """Everything one poll got back: scalar GETs and subtree walks, as received.

    ``failed`` records OIDs/roots whose request failed as a whole (timeout), so a
    missing field can say *timeout* rather than *not supported*.
    """

    gets: dict[str, Result] = field(default_factory=dict)
    walks: dict[str, WalkResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def value(self, oid: str) -> SnmpValue | None:
        """The value of a scalar OID, from a GET or any walk that covered it."""
        got = self.gets.get(oid)
        if isinstance(got, SnmpValue):
            return got
        for root, walk in self.walks.items():
            if oid.startswith(root + "."):
                for row_oid, v in walk.rows:
                    if row_oid == oid:
                        return v
        return None

    def absent_reason(self, oid: str) -> str:
        """Why ``oid`` has no value: ``timeout`` when its request failed, else
        ``not-supported`` (the device said noSuchObject/noSuchInstance/endOfMib)."""
        if oid in self.failed:
            return "timeout"
        for root in self.failed:
            if oid.startswith(root + "."):
                return "timeout"
        got = self.gets.get(oid)
        if got is Absent.NO_RESPONSE:
            return "timeout"
        if got is Absent.ERROR:
            return "error"
        return "not-supported"

    def text(self, oid: str) -> str | None:
        """Cleaned text of a scalar; ``None`` when absent or empty after cleaning."""
        v = self.value(oid)
        if v is None:
            return None
        t = v.as_text()
        return t or None

    def integer(self, oid: str) -> int | None:
        """Integer value of a scalar, ``None`` if absent or not numeric."""
        v = self.value(oid)
        return None if v is None else v.as_int()

    def table(self, root: str) -> dict[int, dict[str, SnmpValue]]:
        """Rows of a conceptual table walked under ``root`` (the *Entry* OID).

        Returns ``{column: {index: value}}`` where ``index`` is the dotted instance
        suffix (e.g. ``"1.3"`` for hrDeviceIndex 1, supply 3).
        """
        out: dict[int, dict[str, SnmpValue]] = {}
        prefix = root + "."
        for walk_root, walk in self.walks.items():
            if not (walk_root == root or walk_root.startswith(prefix)
                    or root.startswith(walk_root + ".")):
                continue
            for oid, v in walk.rows:
                if not oid.startswith(prefix):
                    continue
                column, _, index = oid[len(prefix):].partition(".")
                if not index or not column.isdigit():
                    continue
                out.setdefault(int(column), {})[index] = v
        return out

    def walk_problem(self, root: str) -> str | None:
        """Why a walk under ``root`` stopped early (``not-increasing``, …), if it did."""
        for walk_root, walk in self.walks.items():
            if (walk_root == root or walk_root.startswith(root + ".")) and walk.stopped:
                return walk.stopped
        return self.failed.get(root)

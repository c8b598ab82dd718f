"""The local allowlist: the only addresses the agent will ever send SNMP to.

The server steers *when* the agent works and may ask it to scan or read a device
now, but it must never make the agent probe a network the customer did not
configure: the allowlist comes from the local config file only, and every
address — configured scan, commanded scan, commanded single read — is checked
against it right before it is polled (after hostname resolution, so a name the
server sends cannot smuggle in another network).

Without an explicit ``[policy] allowlist`` the allowlist is exactly the configured
scan targets (addresses, ranges, networks and the hostnames listed there).
Excluded addresses (``[scan] exclude``) are never permitted.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from ..discovery.targets import TargetSpec, TargetSpecError, parse_spec
from ..snmp.types import Target


class AllowlistError(ValueError):
    """An allowlist entry cannot be parsed; the message names it."""


def _key(addr: IPv4Address | IPv6Address) -> tuple[int, int]:
    return addr.version, int(addr)


@dataclass
class _Ranges:
    """Sorted, merged inclusive integer intervals per IP version."""

    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, version: int, lo: int, hi: int) -> None:
        runs = sorted([*self.runs.get(version, []), (lo, hi)])
        merged: list[tuple[int, int]] = []
        for a, b in runs:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.runs[version] = merged

    def contains(self, version: int, value: int) -> bool:
        runs = self.runs.get(version, [])
        i = bisect_right(runs, (value, 2**128)) - 1
        return i >= 0 and runs[i][0] <= value <= runs[i][1]

    def covers(self, version: int, lo: int, hi: int) -> bool:
        runs = self.runs.get(version, [])
        i = bisect_right(runs, (lo, 2**128)) - 1
        return i >= 0 and runs[i][0] <= lo and hi <= runs[i][1]


def _parse(text: str, where: str) -> TargetSpec:
    try:
        return parse_spec(text)
    except TargetSpecError as exc:
        raise AllowlistError(f"{where}: {exc}") from None


@dataclass
class Allowlist:
    """Which addresses (and configured hostnames) may be polled; see the module doc."""

    allowed: _Ranges = field(default_factory=_Ranges)
    excluded: _Ranges = field(default_factory=_Ranges)
    hostnames: frozenset[str] = frozenset()
    source: str = "policy.allowlist"
    """Where it came from, for messages: ``policy.allowlist`` or ``scan.targets``."""
    entries: tuple[str, ...] = ()

    @classmethod
    def build(cls, entries: Sequence[str], exclude: Iterable[str] = (), *,
              hostnames_allowed: bool = False, source: str = "policy.allowlist") -> Allowlist:
        """Parse ``entries`` (CIDRs, ranges, addresses; hostnames only when allowed)."""
        allow = cls(source=source, entries=tuple(entries))
        names: set[str] = set()
        for i, text in enumerate(entries, 1):
            spec = _parse(text, f"{source}[{i}] {text!r}")
            if spec.kind == "hostname":
                if not hostnames_allowed:
                    raise AllowlistError(
                        f"{source}[{i}] {text!r}: the allowlist takes addresses, ranges and "
                        "networks, not hostnames (a name can point anywhere tomorrow)")
                names.add((spec.hostname or "").lower())
                continue
            assert spec.first is not None
            assert spec.last is not None
            allow.allowed.add(spec.first.version, int(spec.first), int(spec.last))
        for i, text in enumerate(exclude, 1):
            spec = _parse(text, f"scan.exclude[{i}] {text!r}")
            if spec.first is not None and spec.last is not None:
                allow.excluded.add(spec.first.version, int(spec.first), int(spec.last))
        allow.hostnames = frozenset(names)
        return allow

    def permits(self, target: Target) -> bool:
        """True when ``target`` may be polled: its address is allowed and not excluded,
        or it was resolved from a hostname the local config lists."""
        try:
            addr = ip_address(target.address)
        except ValueError:
            return False
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        version, value = _key(addr)
        if self.excluded.contains(version, value):
            return False
        if self.allowed.contains(version, value):
            return True
        return target.hostname is not None and target.hostname.lower() in self.hostnames

    def check_spec(self, text: str) -> str | None:
        """``None`` when every address of the target spec ``text`` is allowed, else why not.

        Hostnames pass here only when the local config lists them; their resolved
        addresses are checked again with :meth:`permits` before anything is sent.
        """
        try:
            spec = parse_spec(text)
        except TargetSpecError as exc:
            return str(exc)
        if spec.kind == "hostname":
            if (spec.hostname or "").lower() in self.hostnames:
                return None
            if self.source == "policy.allowlist":
                return None  # resolved first; then every address must pass permits()
            return f"{text}: hostname not in the local configuration"
        assert spec.first is not None
        assert spec.last is not None
        if not self.allowed.covers(spec.first.version, int(spec.first), int(spec.last)):
            return f"{text}: outside the local allowlist ({self.source})"
        return None

"""Target specs: what a technician types, checked and turned into :class:`Target` objects.

Accepted specs (one per string; whitespace around it is ignored):

========================  =====================================================
``10.0.0.0/24``           IPv4 CIDR; its network and broadcast addresses are
                          skipped for prefixes /0-/30 (kept for /31 and /32)
``2001:db8::/120``        IPv6 CIDR (the address cap keeps it small)
``10.0.0.1-10.0.0.50``    inclusive range, either family
``10.0.0.1-50``           short IPv4 range: the end replaces the last octet
``10.0.0.5``, ``::1``     one address; ``fe80::1%eth0`` keeps its zone
``10.0.0.5:1161``         one IPv4 address on another UDP port
``[2001:db8::5]:1161``    one IPv6 address on another port (brackets required:
                          a bare ``::1:1161`` is itself a valid IPv6 address)
``prn-acct-01[:port]``    a hostname, resolved once when the scan starts
========================  =====================================================

Ports can only be given for a single address or hostname; every other target uses
the plan's default port (161).  IPv4-mapped IPv6 addresses (``::ffff:10.0.0.5``) are
read as the IPv4 address they stand for, so the same device is not scanned twice.

Refused unless allowed by name (``allow={"link-local"}``, ``--allow`` on the CLI),
because a request there is at best wasted and at worst reaches many devices at once:

* ``this-network``: 0.0.0.0/8 and the unspecified address ``::``;
* ``multicast``: 224.0.0.0/4 and ff00::/8;
* ``broadcast``: 255.255.255.255.  Allowing it also keeps the network and broadcast
  addresses of IPv4 CIDRs, which are otherwise skipped silently (a CIDR names a
  subnet; its edges are not devices, and a subnet broadcast can make every device
  on it answer at once);
* ``link-local``: 169.254.0.0/16 and fe80::/10 (self-assigned, one segment only).

A spec that would still touch a refused block after exclusions is refused as a whole,
naming the block, rather than quietly trimmed: a technician who typed it should learn
that it was wrong (and can exclude the block, or allow it).
Loopback is allowed (tests and the simulator use it).

How the size is known without expanding anything
------------------------------------------------
Every address spec is one interval of integers in an address *space*: (IP version,
IPv6 zone, UDP port).  :func:`plan` walks the specs in the order given and takes
from each interval the exclusions that apply to its space and everything earlier
specs already cover.  What is left is a few ``(lo, hi)`` runs per spec, kept in
sorted interval lists searched with :mod:`bisect`, so overlapping specs are
de-duplicated and the exact count is known by arithmetic: a /16 costs one tuple,
not 65,536 objects, and even ``10.0.0.0/8`` is measured (and refused by the cap)
without allocating anything.  Expansion is then a generator over ``range(lo, hi+1)``.
A scan therefore yields each spec's new addresses in ascending order, specs in the
order given, every (address, port) once.

Hostnames are resolved once, when :meth:`ScanPlan.targets` starts, through the OS
resolver (``/etc/hosts``, DNS, mDNS as configured).  Each resolved address becomes a
:class:`Target` carrying the hostname, as MPS Monitor does, so a device stays
recognisable after DHCP moves it; an address also covered by an address spec is
yielded once, under the hostname.  A name that does not resolve becomes an error
item in the stream, not an exception, so one typo does not stop a scan of hundreds.
"""

from __future__ import annotations

import asyncio
import re
import socket
from bisect import bisect_left, bisect_right
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Literal, get_args

from ..snmp.types import Target

DEFAULT_MAX_ADDRESSES = 65_536
"""A /16: more than any printer subnet, far less than a typo like ``10.0.0.0/8``."""
DEFAULT_PORT = 161
DEFAULT_RESOLVE_TIMEOUT = 5.0
"""Seconds to wait for one hostname; a dead DNS server must not hang the scan."""

IPAddress = IPv4Address | IPv6Address
SpecKind = Literal["cidr", "range", "address", "hostname"]
Reason = Literal["syntax", "refused", "too-many", "unresolved"]
Category = Literal["this-network", "multicast", "broadcast", "link-local"]
ALLOW_CATEGORIES: frozenset[str] = frozenset(get_args(Category))
"""The names :func:`plan` accepts in ``allow``."""

Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""Hostname to IP literals, best first; raises :class:`OSError` when the name is unknown."""


class TargetSpecError(ValueError):
    """A target spec that cannot be scanned, in words a technician can act on.

    ``spec`` is the text concerned and ``reason`` one of ``syntax``, ``refused``,
    ``too-many``, ``unresolved``, so callers can count or colour errors by kind.
    """

    def __init__(self, spec: str, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.spec = spec
        self.reason = reason


# ---------------------------------------------------------------------------- specs

@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One parsed spec.  ``first``/``last`` bound the addresses (equal for an address),
    ``prefixlen`` is set for CIDRs, ``hostname`` for names, ``port`` only when given.

    ``text`` is what was typed, for messages; it does not take part in equality, so
    ``parse_spec(str(spec)) == spec`` for every spec.
    """

    kind: SpecKind
    first: IPAddress | None = None
    last: IPAddress | None = None
    prefixlen: int | None = None
    hostname: str | None = None
    port: int | None = None
    text: str = field(default="", compare=False)

    @property
    def size(self) -> int | None:
        """Addresses the spec spans (before skipping CIDR edges); ``None`` for a hostname."""
        if self.first is None or self.last is None:
            return None
        return int(self.last) - int(self.first) + 1

    @property
    def label(self) -> str:
        """The spec as typed, or its canonical form when it was built in code."""
        return self.text or str(self)

    def __str__(self) -> str:
        """Canonical form, parseable by :func:`parse_spec`."""
        if self.kind == "hostname":
            host = self.hostname or ""
            return host if self.port is None else f"{host}:{self.port}"
        if self.kind == "cidr":
            return f"{self.first}/{self.prefixlen}"
        if self.kind == "range":
            return f"{self.first}-{self.last}"
        if self.port is None:
            return str(self.first)
        if isinstance(self.first, IPv6Address):
            return f"[{self.first}]:{self.port}"
        return f"{self.first}:{self.port}"


_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
"""RFC 1123 names; ``_`` is tolerated because Windows print servers use it."""
_DOTTED_DIGITS = re.compile(r"[0-9.]+")
_BRACKETED = re.compile(r"\[([^\[\]]*)\](?::(.*))?")
_OCTET = re.compile(r"[0-9]{1,3}")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_spec(text: str) -> TargetSpec:
    """Parse one target spec (syntax only: refusals and the cap are :func:`plan`'s job).

    Raises :class:`TargetSpecError` (reason ``syntax``) naming the spec and what a
    correct one looks like.
    """
    s = text.strip()
    if not s:
        raise TargetSpecError(text, "syntax", "empty target spec")
    if s.startswith("["):
        m = _BRACKETED.fullmatch(s)
        if m is None:
            raise _syntax(s, " is not a bracketed IPv6 address; write [2001:db8::5] or "
                             "[2001:db8::5]:1161")
        try:
            addr = ip_address(m.group(1))
        except ValueError:
            raise _syntax(s, f": '{m.group(1)}' is not a valid IPv6 address") from None
        if addr.version != 6:
            raise _syntax(s, f": brackets are for IPv6 addresses; write {addr}"
                             f"{':' + m.group(2) if m.group(2) is not None else ''}")
        port = None if m.group(2) is None else _port(s, m.group(2))
        return _single(s, addr, port)
    if s.count(":") >= 2:
        # Bare IPv6 (address, CIDR or range).  It cannot carry a port: ``::1:1161`` is
        # itself a valid address, so a port needs the bracketed form.
        return _host_part(s, s)
    host, colon, port_text = s.partition(":")
    spec = _host_part(s, host.strip())
    if not colon:
        return spec
    port = _port(s, port_text.strip())
    if spec.kind not in ("address", "hostname"):
        raise _syntax(s, ": a port can only follow a single address or hostname, not a range "
                         "or CIDR; set the port for the whole scan instead")
    return TargetSpec(spec.kind, spec.first, spec.last, hostname=spec.hostname, port=port,
                      text=s)


def _host_part(s: str, host: str) -> TargetSpec:
    """Parse the part before any port: CIDR, address, range or hostname, in that order
    (an address first, so a zone like ``%br-lan`` is not mistaken for a range)."""
    if "/" in host:
        return _cidr(s, host)
    try:
        return _single(s, ip_address(host), None)
    except ValueError:
        pass
    if "-" in host and (rng := _range(s, host)) is not None:
        return rng
    part = "" if host == s else f" ({host})"
    if ":" in host:
        raise _syntax(s, f" is not a valid IPv6 address, range or CIDR{part}")
    if _DOTTED_DIGITS.fullmatch(host):
        raise _syntax(s, f" is not a valid IPv4 address{part}: it needs four numbers "
                         f"0-255 without leading zeros")
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise _syntax(s, " is not an address, range, CIDR or hostname; write e.g. 10.0.0.5, "
                         "10.0.0.1-50, 10.0.0.0/24, [2001:db8::5]:1161 or printer.example.com")
    return TargetSpec("hostname", hostname=host, text=s)


def _cidr(s: str, host: str) -> TargetSpec:
    try:
        net = ip_network(host, strict=True)
    except ValueError:
        try:
            loose = ip_network(host, strict=False)
        except ValueError:
            raise _syntax(s, " is not a valid CIDR; write e.g. 10.0.0.0/24 or "
                             "2001:db8::/120 (prefix 0-32 for IPv4, 0-128 for IPv6)") from None
        raise _syntax(s, f" has host bits set; write the network as {loose} or the single "
                         f"address as {host.partition('/')[0]}") from None
    if isinstance(net, IPv6Network) and net.prefixlen >= 96:
        mapped = _unmap(net.network_address)
        if isinstance(mapped, IPv4Address):
            net4 = IPv4Network((int(mapped), net.prefixlen - 96))
            return TargetSpec("cidr", net4.network_address, net4.broadcast_address,
                              prefixlen=net4.prefixlen, text=s)
    return TargetSpec("cidr", net.network_address, net.broadcast_address,
                      prefixlen=net.prefixlen, text=s)


def _range(s: str, host: str) -> TargetSpec | None:
    """A range, or ``None`` when the part before the dash is not an address (then it
    is a hostname such as ``prn-acct-01``)."""
    left, _, right = host.partition("-")
    left, right = left.strip(), right.strip()
    try:
        first = ip_address(left)
    except ValueError:
        return None
    if isinstance(first, IPv4Address) and _OCTET.fullmatch(right):
        if int(right) > 255:
            raise _syntax(s, f": the end of a short range replaces the last octet, so it must "
                             f"be 0-255, not {right}")
        last: IPAddress = IPv4Address((int(first) & ~0xFF) | int(right))
    else:
        try:
            last = ip_address(right)
        except ValueError:
            raise _syntax(s, f": '{right}' is not a valid end for a range; write "
                             f"10.0.0.1-10.0.0.50 or 10.0.0.1-50") from None
    if first.version != last.version:
        raise _syntax(s, ": a range cannot mix IPv4 and IPv6")
    if _unmap(first).version == _unmap(last).version:  # both IPv4-mapped: an IPv4 range
        first, last = _unmap(first), _unmap(last)
    if _zone(first) != _zone(last):
        raise _syntax(s, ": both ends of a range must have the same zone")
    if int(last) < int(first):
        raise _syntax(s, f" runs backwards; write {last}-{first}")
    return TargetSpec("range", first, last, text=s)


def _single(s: str, addr: IPAddress, port: int | None) -> TargetSpec:
    addr = _unmap(addr)
    return TargetSpec("address", addr, addr, port=port, text=s)


def _port(s: str, text: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise _syntax(s, f": port '{text}' must be a number from 1 to 65535")
    return int(text)


def _unmap(addr: IPAddress) -> IPAddress:
    """``::ffff:10.0.0.5`` is the IPv4 host 10.0.0.5: one device, one target."""
    if isinstance(addr, IPv6Address) and addr.scope_id is None and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _zone(addr: IPAddress) -> str | None:
    return addr.scope_id if isinstance(addr, IPv6Address) else None


def _syntax(s: str, problem: str) -> TargetSpecError:
    """``problem`` is a predicate (``is not ...``) or, after a colon, a sentence."""
    return TargetSpecError(s, "syntax", f"'{s}'{problem}")


# ------------------------------------------------------------------------- refusals

@dataclass(frozen=True, slots=True)
class _Refused:
    category: Category
    lo: int
    hi: int
    version: int
    what: str
    why: str


def _refused(category: Category, cidr: str, what: str, why: str) -> _Refused:
    net = ip_network(cidr)
    return _Refused(category, int(net.network_address), int(net.broadcast_address),
                    net.version, what, why)


_NOBODY = "no device can be reached there"
_MANY = "one request there can reach many devices at once"
_SELF = "devices give themselves these when DHCP fails, and they only work on one segment"
_REFUSED: tuple[_Refused, ...] = (
    _refused("this-network", "0.0.0.0/8", "'this network' (0.0.0.0/8)", _NOBODY),
    _refused("this-network", "::/128", "the unspecified address (::)", _NOBODY),
    _refused("multicast", "224.0.0.0/4", "multicast (224.0.0.0/4)", _MANY),
    _refused("multicast", "ff00::/8", "multicast (ff00::/8)", _MANY),
    _refused("broadcast", "255.255.255.255/32", "the limited broadcast address "
             "(255.255.255.255)", "every device on the segment would get the request"),
    _refused("link-local", "169.254.0.0/16", "link-local (169.254.0.0/16)", _SELF),
    _refused("link-local", "fe80::/10", "link-local (fe80::/10)", _SELF),
)


def _refusal(version: int, lo: int, hi: int, allow: frozenset[str]) -> _Refused | None:
    """The first refused block that ``[lo, hi]`` touches and ``allow`` does not cover."""
    for r in _REFUSED:
        if r.version == version and r.category not in allow and r.lo <= hi and lo <= r.hi:
            return r
    return None


def _refusal_error(label: str, r: _Refused, single: bool, resolved: str | None = None) -> \
        TargetSpecError:
    subject = f"{label} resolves to {resolved}, which" if resolved else label
    verb = "is" if single else "overlaps"
    return TargetSpecError(label, "refused", f"{subject} is refused because it {verb} {r.what}: "
                                             f"{r.why}; use --allow {r.category} if you mean it")


# ------------------------------------------------------------------------ intervals

_Space = tuple[int, str | None, int]
"""(IP version, IPv6 zone, UDP port): addresses in different spaces never collide."""


class _Intervals:
    """Disjoint, non-adjacent, sorted closed integer intervals: a set of addresses whose
    cost is the number of runs, not the number of addresses."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        """Add ``[lo, hi]``, merging with every run it overlaps or touches."""
        i = bisect_left(self._ends, lo - 1)      # first run ending at or after lo-1
        j = bisect_right(self._starts, hi + 1)   # runs [i, j) touch [lo, hi]
        if i < j:
            lo, hi = min(lo, self._starts[i]), max(hi, self._ends[j - 1])
        self._starts[i:j] = [lo]
        self._ends[i:j] = [hi]

    def subtract_from(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi]`` not in this set, ascending."""
        out: list[tuple[int, int]] = []
        cur = lo
        i = bisect_left(self._ends, lo)
        while i < len(self._starts) and self._starts[i] <= hi and cur <= hi:
            if self._starts[i] > cur:
                out.append((cur, self._starts[i] - 1))
            cur = max(cur, self._ends[i] + 1)
            i += 1
        if cur <= hi:
            out.append((cur, hi))
        return out

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and self._ends[i] >= value


@dataclass(frozen=True, slots=True)
class _Exclusion:
    version: int
    zone: str | None
    port: int | None
    lo: int
    hi: int

    def applies(self, space: _Space) -> bool:
        """A zone or port on an exclusion narrows it; without them it covers all."""
        version, zone, port = space
        return (self.version == version and self.zone in (None, zone)
                and self.port in (None, port))


@dataclass(frozen=True, slots=True)
class _Run:
    space: _Space
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class _Host:
    spec: TargetSpec
    port: int


# ----------------------------------------------------------------------------- plan

@dataclass(frozen=True, slots=True, eq=False)
class ScanPlan:
    """What a scan will probe, checked and measured but not yet expanded.

    ``count`` is the exact number of targets the address specs yield after exclusions
    and de-duplication; each entry of ``hostnames`` adds the addresses it resolves to
    (usually one), minus any already counted.
    """

    count: int
    hostnames: tuple[TargetSpec, ...]
    max_addresses: int
    allow: frozenset[str]
    default_port: int
    _items: tuple[_Run | _Host, ...] = field(repr=False)
    _exclusions: tuple[_Exclusion, ...] = field(repr=False)
    _literal: dict[_Space, _Intervals] = field(repr=False)

    def addresses(self) -> Iterator[Target]:
        """The address specs' targets, lazily, without hostnames (no resolver needed)."""
        for item in self._items:
            if isinstance(item, _Run):
                yield from _expand(item, frozenset())

    async def targets(self, resolver: Resolver | None = None, *,
                      timeout: float = DEFAULT_RESOLVE_TIMEOUT,
                      ) -> AsyncGenerator[Target | TargetSpecError, None]:
        """Every target, specs in the order given, hostnames resolved once up front.

        Problems found only now (a name that does not resolve, or resolves to a refused
        or excluded address, or past the cap) are yielded as :class:`TargetSpecError`
        items so the rest of the scan goes on.  ``resolver`` defaults to the OS
        resolver (:func:`resolve_host`); each distinct name is asked once, concurrently,
        for at most ``timeout`` seconds.
        """
        names = list(dict.fromkeys((h.hostname or "").lower() for h in self.hostnames))
        answers = await asyncio.gather(
            *(_resolve(resolver or resolve_host, name, timeout) for name in names))
        resolved = dict(zip(names, answers, strict=True))

        budget = self.max_addresses - self.count
        claimed: set[tuple[_Space, int]] = set()
        by_host: dict[int, list[Target | TargetSpecError]] = {}
        for index, item in enumerate(self._items):
            if isinstance(item, _Host):
                answer = resolved[(item.spec.hostname or "").lower()]
                by_host[index], budget = self._host_targets(item, answer, budget, claimed)

        skip = frozenset(claimed)
        for index, item in enumerate(self._items):
            if isinstance(item, _Host):
                for hit in by_host[index]:
                    yield hit
            else:
                for target in _expand(item, skip):
                    yield target

    def _host_targets(self, host: _Host, answer: list[str] | str, budget: int,
                      claimed: set[tuple[_Space, int]],
                      ) -> tuple[list[Target | TargetSpecError], int]:
        """Targets (and error items) for one hostname spec, and the cap budget left.

        An address already counted in ``count`` costs nothing: the hostname only
        takes it over, so the device keeps its name."""
        label = host.spec.label
        if isinstance(answer, str):
            return [TargetSpecError(label, "unresolved", f"{label} could not be resolved "
                                    f"({answer}); check the name or use its IP address")], budget
        out: list[Target | TargetSpecError] = []
        for text in answer:
            try:
                addr = _unmap(ip_address(text))
            except ValueError:
                out.append(TargetSpecError(label, "unresolved", f"{label}: the resolver "
                                           f"returned {text!r}, which is not an IP address"))
                continue
            value = int(addr)
            space: _Space = (addr.version, _zone(addr), host.port)
            refused = _refusal(addr.version, value, value, self.allow)
            if refused is not None:
                out.append(_refusal_error(label, refused, single=True, resolved=str(addr)))
                continue
            if (space, value) in claimed or any(
                    x.applies(space) and x.lo <= value <= x.hi for x in self._exclusions):
                continue
            if value not in self._literal.get(space, ()):
                if budget <= 0:
                    out.append(TargetSpecError(label, "too-many", (
                        f"{label} resolves to {addr}, which would take the scan past the "
                        f"limit of {self.max_addresses:,} addresses; narrow the other "
                        f"targets or raise --max-addresses")))
                    continue
                budget -= 1
            claimed.add((space, value))
            out.append(Target(str(addr), host.port, hostname=host.spec.hostname))
        return out, budget


def _expand(run: _Run, skip: frozenset[tuple[_Space, int]]) -> Iterator[Target]:
    version, zone, port = run.space
    make = IPv4Address if version == 4 else IPv6Address
    suffix = f"%{zone}" if zone else ""
    for value in range(run.lo, run.hi + 1):
        if skip and (run.space, value) in skip:
            continue
        yield Target(f"{make(value)}{suffix}", port)


def plan(specs: Sequence[str | TargetSpec], exclude: Sequence[str | TargetSpec] = (), *,
         max_addresses: int = DEFAULT_MAX_ADDRESSES, allow: Collection[str] = frozenset(),
         default_port: int = DEFAULT_PORT) -> ScanPlan:
    """Check and measure a scan before anything is sent.

    ``exclude`` takes the same syntax minus hostnames (an exclusion must not depend on
    what a name resolves to today); an exclusion with a port or zone removes only that
    port or zone.  Refusals apply to what is left after exclusions, so
    ``-x 224.0.0.0/4`` can make a wide spec acceptable.  Raises
    :class:`TargetSpecError` for the first spec that is malformed, refused, or over
    ``max_addresses``, and when all specs together (each hostname counted as one)
    exceed it; all of this is arithmetic on intervals, so an oversized spec is
    rejected without being expanded.
    """
    if isinstance(specs, str) or isinstance(exclude, str):
        raise TypeError("plan() takes a list of specs, not one string")
    allowed = frozenset(allow)
    if unknown := allowed - ALLOW_CATEGORIES:
        raise TargetSpecError(", ".join(sorted(unknown)), "syntax", (
            f"cannot allow {', '.join(sorted(unknown))}; choose from "
            f"{', '.join(sorted(ALLOW_CATEGORIES))}"))
    if max_addresses < 1:
        raise ValueError(f"max_addresses must be at least 1, not {max_addresses}")
    if not 1 <= default_port <= 65535:
        raise ValueError(f"default_port must be 1-65535, not {default_port}")

    exclusions = tuple(_exclusion(_as_spec(e)) for e in exclude)
    excluded: dict[_Space, _Intervals] = {}
    covered: dict[_Space, _Intervals] = {}
    items: list[_Run | _Host] = []
    hostnames: list[TargetSpec] = []
    total = 0
    for raw in specs:
        spec = _as_spec(raw)
        port = spec.port if spec.port is not None else default_port
        if spec.first is None:
            items.append(_Host(spec, port))
            hostnames.append(spec)
            continue
        lo = int(spec.first)
        hi = int(spec.last) if spec.last is not None else lo
        if (spec.kind == "cidr" and spec.first.version == 4 and (spec.prefixlen or 0) <= 30
                and "broadcast" not in allowed):
            lo, hi = lo + 1, hi - 1
        space: _Space = (spec.first.version, _zone(spec.first), port)
        if space not in excluded:
            excluded[space] = _Intervals()
            for x in exclusions:
                if x.applies(space):
                    excluded[space].add(x.lo, x.hi)
        seen = covered.setdefault(space, _Intervals())
        runs = [run for part in excluded[space].subtract_from(lo, hi)
                for run in seen.subtract_from(*part)]
        for a, b in runs:  # what would be sent, so an exclusion can make a spec acceptable
            if (refused := _refusal(spec.first.version, a, b, allowed)) is not None:
                raise _refusal_error(spec.label, refused, single=spec.kind == "address")
        n = sum(b - a + 1 for a, b in runs)
        if n > max_addresses:
            size = spec.size or 0
            after = f" ({n:,} after exclusions and overlaps)" if n < hi - lo + 1 else ""
            raise TargetSpecError(spec.label, "too-many", (
                f"{spec.label} has {size:,} addresses{after}, more than the limit of "
                f"{max_addresses:,}; narrow it or raise --max-addresses"))
        seen.add(lo, hi)
        items.extend(_Run(space, a, b) for a, b in runs)
        total += n

    if total + len(hostnames) > max_addresses:
        names = " (each hostname counted as one)" if hostnames else ""
        labels = ", ".join(_as_spec(s).label for s in specs)
        raise TargetSpecError(labels, "too-many", (
            f"the targets add up to {total + len(hostnames):,} addresses{names}, more than "
            f"the limit of {max_addresses:,}; narrow them or raise --max-addresses"))

    literal: dict[_Space, _Intervals] = {}
    for item in items:
        if isinstance(item, _Run):
            literal.setdefault(item.space, _Intervals()).add(item.lo, item.hi)
    return ScanPlan(total, tuple(hostnames), max_addresses, allowed, default_port,
                    tuple(items), exclusions, literal)


def _as_spec(raw: str | TargetSpec) -> TargetSpec:
    return raw if isinstance(raw, TargetSpec) else parse_spec(raw)


def _exclusion(spec: TargetSpec) -> _Exclusion:
    if spec.first is None or spec.last is None:
        raise TargetSpecError(spec.label, "syntax", (
            f"{spec.label}: exclusions must be addresses, ranges or CIDRs, not hostnames "
            f"(a name may point elsewhere tomorrow); exclude its address instead"))
    return _Exclusion(spec.first.version, _zone(spec.first), spec.port,
                      int(spec.first), int(spec.last))


# ------------------------------------------------------------------------ resolving

async def resolve_host(name: str) -> list[str]:
    """The OS resolver's addresses for ``name`` (IPv4 and IPv6), best first, no repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    found: dict[str, None] = {}
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            found[str(sockaddr[0])] = None
    return list(found)


async def _resolve(resolver: Resolver, name: str, timeout: float) -> list[str] | str:
    """Addresses, or why there are none (a string) — never an exception, so one bad
    name cannot cancel the lookups of the others."""
    try:
        async with asyncio.timeout(timeout):
            answer = list(await resolver(name))
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, UnicodeError) as exc:
        return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(
            exc).__name__
    return answer or "the resolver returned no addresses"


async def parse_single_target(text: str, *, default_port: int = DEFAULT_PORT,
                              allow: Collection[str] = frozenset(),
                              resolver: Resolver | None = None,
                              timeout: float = DEFAULT_RESOLVE_TIMEOUT) -> Target:
    """One device, for commands that talk to exactly one (``probe``): an address, a
    ``host:port``/``[v6]:port``, or a hostname, which is resolved now and takes the
    resolver's first (preferred) address.  Raises :class:`TargetSpecError`."""
    spec = parse_spec(text)
    if spec.kind not in ("address", "hostname"):
        raise TargetSpecError(spec.label, "syntax", f"{spec.label} is a {spec.kind}; give one "
                              f"address or hostname")
    single = plan([spec], max_addresses=1, allow=allow, default_port=default_port)
    problem: TargetSpecError | None = None
    async with aclosing(single.targets(resolver, timeout=timeout)) as stream:
        async for item in stream:
            if isinstance(item, Target):
                return item
            problem = problem or item
    raise problem or TargetSpecError(spec.label, "unresolved",
                                     f"{spec.label} gave no usable address")

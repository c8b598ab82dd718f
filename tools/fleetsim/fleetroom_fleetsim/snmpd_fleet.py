"""Serve .snmprec recordings from net-snmp ``snmpd`` on many 127.x.y.z addresses.

snmpsim answers a few hundred requests a second per process; load tests of the agent
need thousands of devices, so this turns each recording into an ``snmpd`` config of
``override OID TYPE VALUE`` lines (~17,000 GETs/s per core) and runs one foreground
``snmpd`` per chunk of endpoints.

What was measured with net-snmp 5.9.3 (Debian 12), and what follows from it:

* snmpd joins every ``agentaddress`` value with commas into one 2,560-byte buffer
  (``SPRINT_MAX_LEN`` in ``snmpd_set_agent_address``) and cuts the rest off without a
  word: whole endpoints beyond ~2,559 characters silently never answer, and a cut
  inside an address either aborts start-up ('Error opening specified endpoint')
  or binds a truncated address.  Measured: 156 endpoints of ``127.0.x.y:161``,
  140 with 5-digit ports, 127 when written ``udp:127.0.x.y:161`` (the "~125 per
  process" folklore).  So endpoints are written without the ``udp:`` prefix (UDP is
  the default), each process gets as many as fit in :data:`AGENTADDRESS_BUDGET`
  characters (optionally fewer via ``per_process``), :func:`render_config` refuses
  anything longer, and :meth:`SnmpdFleet.start` checks every endpoint answers.
* All endpoints of one process answer identical data.  A process serves one
  recording; devices cycle through the recordings, so with more devices than
  recordings several endpoints share a recording (and its serial number).
* Left at its defaults, snmpd answers ~7,500 OIDs of its own beyond the overrides —
  the host's sysName/sysContact, its own sysObjectID, hrDevice/hrStorage/
  hrSWInstalled tables, ifTable, IP-MIB, UCD and NET-SNMP-AGENT tables — and opens
  an SMUX listener on TCP 0.0.0.0:199.  A simulated switch would suddenly have a
  host's hrDeviceTable.  ``-I override,vacm_conf`` initialises only the override
  module and access control (``usmConf,usmUser`` are added when SNMPv3 is on; those
  register just usmUserSpinLock and usmUserTable under 1.3.6.1.6.3.15.1.2), nothing
  listens but the configured UDP endpoints, and a VACM view excluding
  1.3.6.1.6.3.15.1.2 hides the USM objects too: a walk returns exactly the
  recording.  A view alone (even one listing only the recording's subtrees) would
  still leave the modules running — collecting host data, listening on TCP 199 —
  and any view wider than the recording leaks; ``-I`` alone leaves the USM table
  visible over SNMPv3.  Both together are the restriction.
* ``override`` in 5.9.3 accepts integer, uinteger (Gauge32), counter, timeticks,
  octet_str (``0x…`` hex) and object_id.  IpAddress, Counter64, Opaque and Null are
  rejected ("illegal/unsupported type specified"), and octet strings longer than
  2,046 bytes are truncated; such records are skipped and reported in
  :attr:`SnmpdFleet.skipped` rather than served wrong.
* Variation modules are static here: ``numeric`` serves its ``initial`` value,
  ``writecache``/``delay`` their ``value``/``hexvalue``; counters do not move.
* Each process runs in the foreground (``-f``) with ``-C`` (no system snmpd.conf),
  its own pid file and ``SNMP_PERSISTENT_DIR`` in a temp dir (``/var/lib/snmp`` is
  never touched) and ``--noPersistentLoad/Save``.  As root it binds port 161 and
  then drops to nobody (``agentuser``/``agentgroup``); as any other user it uses
  port 16161.  After start every socket of every process is checked to be on
  127.0.0.0/8, and :meth:`SnmpdFleet.start` refuses to continue otherwise.
* SNMPv3 uses ``createUser`` with SHA-256 and AES-256 (net-snmp's AES-256 is the
  Blumenthal draft key extension, the one pysnmp calls ``AES256``), and each
  process has its own random engine ID.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

AGENTADDRESS_MAX_CHARS = 2559
"""snmpd keeps the comma-joined ``agentaddress`` list in a 2,560-byte buffer (net-snmp
``SPRINT_MAX_LEN``) and silently drops whatever does not fit."""
AGENTADDRESS_BUDGET = 2500
"""What we let one process use of :data:`AGENTADDRESS_MAX_CHARS`, leaving a margin."""
MAX_OCTETS = 2046
"""Longest octet string an ``override`` line carries intact (measured)."""
AGENT_OWNED = ("1.3.6.1.6.3.15.1.2",)
"""usmUser objects the SNMPv3 modules register; never served from a recording."""
VIEW = "fleetsim"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

_OVERRIDE_TYPES = {"2": "integer", "65": "counter", "66": "uinteger", "67": "timeticks",
                   "4": "octet_str", "6": "object_id"}
_UNSUPPORTED = {"5": "Null", "64": "IpAddress", "68": "Opaque", "70": "Counter64",
                "128": "noSuchObject", "129": "noSuchInstance", "130": "endOfMibView"}


# --- Reading recordings -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One snmprec line: ``tag`` is the BER tag number, ``encoding`` ``""``/``"x"``/``"e"``."""

    oid: str
    tag: str
    encoding: str
    module: str
    raw: str


def read_snmprec(path: Path) -> list[Record]:
    """Every record of ``path`` in file order (leading dots dropped, blank lines skipped)."""
    out: list[Record] = []
    for n, text in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        line = text.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("|", 2)
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected OID|TAG|VALUE")
        oid, tag_text, raw = parts
        tag_text, _, module = tag_text.partition(":")
        encoding = tag_text[-1] if tag_text[-1:] in ("x", "e") else ""
        out.append(Record(oid.strip().lstrip("."), tag_text.rstrip("xe"), encoding, module, raw))
    return out


def _unescape(text: str) -> bytes:
    """snmpsim's ``e`` encoding: Python-style backslash escapes in latin-1 text."""
    simple = {"\\": 0x5C, "'": 0x27, '"': 0x22, "a": 7, "b": 8, "f": 12, "n": 10, "r": 13,
              "t": 9, "v": 11}
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x":
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            out.append(simple[nxt])
            i += 2
            continue
        out.append(ord(ch))
        i += 1
    return bytes(out)


def _module_value(rec: Record) -> tuple[str, bool] | None:
    """(static value, is hex) a variation-module record stands for, or None."""
    settings = dict(part.split("=", 1) for part in rec.raw.split(",") if "=" in part)
    if rec.module == "numeric":
        return str(int(float(settings.get("initial", settings.get("min", "0"))))), False
    if "value" in settings:
        return settings["value"], rec.encoding == "x"
    if "hexvalue" in settings:
        return settings["hexvalue"], True
    return None


def record_value(rec: Record) -> int | bytes | str | None:
    """The value a static agent should answer: int, bytes (octets) or OID text; None if
    the record has no static meaning (a variation module without a value)."""
    raw, hexed = rec.raw, rec.encoding == "x"
    if rec.module:
        found = _module_value(rec)
        if found is None:
            return None
        raw, hexed = found
    if rec.tag in ("4", "68"):
        if hexed:
            return bytes.fromhex(raw)
        return _unescape(raw) if rec.encoding == "e" else raw.encode("latin-1")
    if rec.tag == "6":
        return raw.strip().lstrip(".")
    if rec.tag in ("2", "65", "66", "67", "70"):
        return int(raw.strip())
    if rec.tag == "64" and hexed:
        return ".".join(str(b) for b in bytes.fromhex(raw))
    return raw


# --- snmpd configuration ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record not served, and why."""

    oid: str
    reason: str


def override_line(rec: Record) -> str | Skipped:
    """The ``override`` directive for one record, or why it cannot be served."""
    if rec.tag in _UNSUPPORTED:
        return Skipped(rec.oid, f"{_UNSUPPORTED[rec.tag]} is not supported by snmpd override")
    snmpd_type = _OVERRIDE_TYPES.get(rec.tag)
    if snmpd_type is None:
        return Skipped(rec.oid, f"unknown tag {rec.tag}")
    if any(rec.oid == p or rec.oid.startswith(p + ".") for p in AGENT_OWNED):
        return Skipped(rec.oid, "registered by snmpd's own USM module")
    try:
        value = record_value(rec)
    except (ValueError, KeyError) as exc:
        return Skipped(rec.oid, f"unparsable value: {exc}")
    if value is None:
        return Skipped(rec.oid, f"variation module {rec.module!r} has no static value")
    oid = "." + rec.oid
    if isinstance(value, bytes):
        if len(value) > MAX_OCTETS:
            return Skipped(rec.oid, f"octet string of {len(value)} bytes > {MAX_OCTETS}")
        return f'override {oid} octet_str {"0x" + value.hex() if value else chr(34) * 2}'
    if isinstance(value, int):
        lo, hi = (-(2**31), 2**31 - 1) if rec.tag == "2" else (0, 2**32 - 1)
        if not lo <= value <= hi:
            return Skipped(rec.oid, f"{value} out of range for tag {rec.tag}")
        return f"override {oid} {snmpd_type} {value}"
    if not value or not all(a.isdigit() for a in value.split(".")):
        return Skipped(rec.oid, f"not a numeric OID value: {value!r}")
    return f"override {oid} object_id .{value}"


@dataclass(frozen=True, slots=True)
class SnmpdUser:
    """An SNMPv3 USM user in net-snmp's ``createUser`` terms (e.g. SHA-256, AES-256)."""

    name: str = "fleetsim"
    auth_proto: str = "SHA-256"
    auth_key: str | None = "fleetsim-auth-key"
    priv_proto: str = "AES-256"
    priv_key: str | None = "fleetsim-priv-key"

    @property
    def level(self) -> str:
        """``priv``, ``auth`` or ``noauth`` as ``rouser`` wants it."""
        if self.auth_key and self.priv_key:
            return "priv"
        return "auth" if self.auth_key else "noauth"

    def directives(self) -> list[str]:
        """``createUser`` and ``rouser`` lines limited to the recording's view."""
        create = f"createUser {self.name}"
        if self.auth_key:
            create += f" {self.auth_proto} {self.auth_key}"
            if self.priv_key:
                create += f" {self.priv_proto} {self.priv_key}"
        return [create, f"rouser {self.name} {self.level} -V {VIEW}"]


def snmpd_modules(versions: Collection[str]) -> str:
    """The ``-I`` list: the override module, access control, and USM only for SNMPv3."""
    mods = ["override", "vacm_conf"]
    if "3" in versions:
        mods += ["usmConf", "usmUser"]
    return ",".join(mods)


def render_config(records: Sequence[Record], addresses: Sequence[tuple[str, int]], *,
                  community: str = "public", versions: Collection[str] = ("1", "2c", "3"),
                  user: SnmpdUser | None = None, drop_to: tuple[str, str] | None = None,
                  source: str = "") -> tuple[str, list[Skipped]]:
    """An snmpd.conf serving ``records`` on ``addresses``; also the records left out.

    Access is VACM: a ``com2sec``/``group``/``access`` triple per enabled community
    version (so v1-only or v2c-only devices are possible, which ``rocommunity``
    cannot express) and ``rouser`` for SNMPv3, all limited to the view.
    """
    bad = set(versions) - {"1", "2c", "3"}
    if bad or not versions:
        raise ValueError(f"versions must be a non-empty subset of 1, 2c, 3; got {versions}")
    for host, _port in addresses:
        if ipaddress.ip_address(host) not in LOOPBACK:
            raise ValueError(f"{host} is not a 127.0.0.0/8 address")
    spec = agentaddress_spec(addresses)
    if len(spec) > AGENTADDRESS_BUDGET:
        raise ValueError(f"{len(addresses)} endpoints need {len(spec)} characters of "
                         f"agentaddress; snmpd would silently drop those beyond "
                         f"{AGENTADDRESS_MAX_CHARS} (use more processes)")
    lines = [f"# Generated by fleetroom_fleetsim.snmpd_fleet{' from ' + source if source else ''}.",
             f"agentaddress {spec}", "dontLogTCPWrappersConnects yes",
             f"view {VIEW} included .1"]
    lines += [f"view {VIEW} excluded .{p}" for p in AGENT_OWNED]
    community_models = [v for v in ("1", "2c") if v in versions]
    if community_models:
        lines.append(f"com2sec fleetsim_sec 127.0.0.0/8 {community}")
        lines += [f"group fleetsim_grp v{v} fleetsim_sec" for v in community_models]
        lines.append(f'access fleetsim_grp "" any noauth exact {VIEW} none none')
    if "3" in versions:
        lines += (user or SnmpdUser()).directives()
    if drop_to:
        lines += [f"agentuser {drop_to[0]}", f"agentgroup {drop_to[1]}"]
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for rec in records:
        if rec.oid in seen:
            skipped.append(Skipped(rec.oid, "duplicate OID"))
            continue
        seen.add(rec.oid)
        line = override_line(rec)
        if isinstance(line, Skipped):
            skipped.append(line)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n", skipped


# --- Addresses, probing, sockets ------------------------------------------------


def agentaddress_spec(addresses: Sequence[tuple[str, int]]) -> str:
    """The ``agentaddress`` value: ``host:port`` joined by commas (UDP is the default
    transport, so no ``udp:`` prefix spends the 2,559 characters snmpd keeps)."""
    return ",".join(f"{h}:{p}" for h, p in addresses)


def pack_endpoints(addresses: Sequence[tuple[str, int]], per_process: int | None = None,
                   budget: int = AGENTADDRESS_BUDGET) -> list[list[tuple[str, int]]]:
    """Split ``addresses`` into per-process groups whose agentaddress fits ``budget``."""
    groups: list[list[tuple[str, int]]] = []
    size = 0
    for addr in addresses:
        token = len(f"{addr[0]}:{addr[1]}")
        full = per_process is not None and groups and len(groups[-1]) >= per_process
        if not groups or full or size + 1 + token > budget:
            groups.append([])
            size = -1
        groups[-1].append(addr)
        size += 1 + token
    return groups


def loopback_addresses(base: str, count: int) -> list[str]:
    """``count`` addresses from ``base`` upwards, skipping .0 and .255 last octets."""
    start = ipaddress.ip_address(base)
    if start not in LOOPBACK:
        raise ValueError(f"{base} is not in 127.0.0.0/8")
    out: list[str] = []
    current = int(start)
    while len(out) < count:
        addr = ipaddress.ip_address(current)
        if addr not in LOOPBACK:
            raise ValueError(f"{count} addresses from {base} leave 127.0.0.0/8")
        if current & 0xFF not in (0, 255):
            out.append(str(addr))
        current += 1
    return out


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _ber_int(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def _ber_oid(oid: str) -> bytes:
    arcs = [int(a) for a in oid.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def probe_packet(versions: Collection[str], community: str, oid: str, request_id: int) -> bytes:
    """A request any correctly configured endpoint answers.

    v2c (or v1) GET of ``oid`` with the community, so an answer also proves the
    community; for v3-only fleets an unauthenticated discovery request, which an
    agent answers with a usmStatsUnknownEngineIDs report.
    """
    if "2c" in versions or "1" in versions:
        version = 1 if "2c" in versions else 0
        varbinds = _tlv(0x30, _tlv(0x30, _ber_oid(oid) + b"\x05\x00"))
        pdu = _tlv(0xA0, _ber_int(request_id) + _ber_int(0) + _ber_int(0) + varbinds)
        return _tlv(0x30, _ber_int(version) + _tlv(0x04, community.encode()) + pdu)
    header = _tlv(0x30, _ber_int(request_id) + _ber_int(65507) + _tlv(0x04, b"\x04")
                  + _ber_int(3))
    usm = _tlv(0x30, _tlv(0x04, b"") + _ber_int(0) + _ber_int(0) + _tlv(0x04, b"") * 3)
    pdu = _tlv(0xA0, _ber_int(request_id) + _ber_int(0) + _ber_int(0) + _tlv(0x30, b""))
    scoped = _tlv(0x30, _tlv(0x04, b"") + _tlv(0x04, b"") + pdu)
    return _tlv(0x30, _ber_int(3) + header + _tlv(0x04, usm) + scoped)


def wait_until_answering(targets: dict[tuple[str, int], bytes], deadline: float,
                         alive: Collection[subprocess.Popen[bytes]] = ()) -> set[tuple[str, int]]:
    """Send each target its probe until it answers or ``deadline``; returns the silent ones.

    One socket, resends every 0.5 s: with hundreds of endpoints a per-endpoint
    ``snmpget`` (~17 ms each) would dominate start-up.
    """
    pending = dict(targets)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        next_send = 0.0
        while pending and time.monotonic() < deadline:
            if any(p.poll() is not None for p in alive):
                break
            if time.monotonic() >= next_send:
                for addr, packet in pending.items():
                    sock.sendto(packet, addr)
                next_send = time.monotonic() + 0.5
            with contextlib.suppress(TimeoutError):
                while True:
                    _data, src = sock.recvfrom(65535)
                    pending.pop((src[0], src[1]), None)
    return set(pending)


def _hex_addr(text: str) -> str:
    """An address from /proc/net/{udp,tcp}[6] (little-endian hex words)."""
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    v6 = ipaddress.IPv6Address(words)
    return str(v6.ipv4_mapped or v6)


def process_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, local address, port) of every inet socket ``pid`` holds, from /proc."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for proto in ("udp", "udp6", "tcp", "tcp6", "raw", "raw6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                host, port = cols[1].rsplit(":", 1)
                out.append((proto, _hex_addr(host), int(port, 16)))
    return out


def _is_loopback(host: str) -> bool:
    addr = ipaddress.ip_address(host)
    return addr in LOOPBACK or addr == ipaddress.ip_address("::1")


# --- The fleet ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One simulated device: where it listens and what it serves."""

    host: str
    port: int
    recording: Path
    community: str

    @property
    def address(self) -> str:
        """``host:port`` as the agent and net-snmp tools take it."""
        return f"{self.host}:{self.port}"


@dataclass
class _Process:
    recording: Path
    endpoints: list[Endpoint]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None


def snmpd_binary() -> str | None:
    """Path of net-snmp's snmpd (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("snmpd")
    if found:
        return found
    return "/usr/sbin/snmpd" if Path("/usr/sbin/snmpd").exists() else None


def _drop_privileges_to() -> tuple[str, str] | None:
    """As root, let snmpd bind port 161 and then run as nobody."""
    if os.geteuid() != 0:
        return None
    try:
        grp.getgrnam("nogroup")
    except KeyError:
        return ("nobody", "nobody")
    return ("nobody", "nogroup")


@dataclass
class SnmpdFleet:
    """``count`` simulated devices on 127.x.y.z, served by foreground snmpd processes.

    Device ``i`` serves ``recordings[i % len(recordings)]`` on the ``i``-th address
    from ``base``.  Use as a context manager; everything is stopped and removed on
    exit, and on any error during start.
    """

    recordings: Sequence[Path]
    count: int | None = None
    base: str = "127.0.10.1"
    port: int | None = None  # default: 161 as root, else 16161
    community: str = "public"
    versions: Collection[str] = ("1", "2c", "3")
    user: SnmpdUser = field(default_factory=SnmpdUser)
    per_process: int | None = None  # None: as many as snmpd keeps (~140-156)
    startup_timeout: float = 30.0
    endpoints: list[Endpoint] = field(default_factory=list, init=False)
    skipped: dict[Path, list[Skipped]] = field(default_factory=dict, init=False)
    _processes: list[_Process] = field(default_factory=list, init=False, repr=False)
    _root: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.recordings:
            raise ValueError("no recordings given")
        if self.per_process is not None and self.per_process < 1:
            raise ValueError("per_process must be at least 1")

    @property
    def pids(self) -> list[int]:
        """Process ids of the running snmpd processes."""
        return [p.proc.pid for p in self._processes if p.proc is not None]

    def _plan(self) -> list[_Process]:
        count = len(self.recordings) if self.count is None else self.count
        port = self.port if self.port is not None else (161 if os.geteuid() == 0 else 16161)
        hosts = loopback_addresses(self.base, count)
        by_recording: dict[Path, list[Endpoint]] = {}
        for i, host in enumerate(hosts):
            rec = Path(self.recordings[i % len(self.recordings)])
            ep = Endpoint(host, port, rec, self.community)
            self.endpoints.append(ep)
            by_recording.setdefault(rec, []).append(ep)
        assert self._root is not None
        plan: list[_Process] = []
        for rec, eps in by_recording.items():
            start = 0
            for group in pack_endpoints([(ep.host, ep.port) for ep in eps], self.per_process):
                workdir = self._root / f"p{len(plan):04d}"
                plan.append(_Process(rec, eps[start:start + len(group)], workdir))
                start += len(group)
        return plan

    def start(self) -> SnmpdFleet:
        """Start every process and return once each endpoint has answered a request."""
        binary = snmpd_binary()
        if binary is None:
            raise RuntimeError("net-snmp snmpd not found (Debian package snmpd)")
        self._root = Path(tempfile.mkdtemp(prefix="fleetsim-snmpd-"))
        try:
            self._processes = self._plan()
            probes: dict[tuple[str, int], bytes] = {}
            for n, proc in enumerate(self._processes):
                records = read_snmprec(proc.recording)
                first = self._launch(binary, proc, records)
                for i, ep in enumerate(proc.endpoints):
                    probes[(ep.host, ep.port)] = probe_packet(
                        self.versions, self.community, first, n * 1000 + i + 1)
            alive = [p.proc for p in self._processes if p.proc is not None]
            silent = wait_until_answering(probes, time.monotonic() + self.startup_timeout, alive)
            self._raise_if_failed(silent)
            self._check_loopback_only()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, binary: str, proc: _Process, records: list[Record]) -> str:
        """Write the config and start one snmpd; returns the OID used to probe it."""
        proc.workdir.mkdir(parents=True)
        persist = proc.workdir / "persist"
        persist.mkdir()
        drop = _drop_privileges_to()
        if drop:
            # snmpd writes its persistent state as 'nobody' after dropping root.
            os.chmod(proc.workdir, 0o755)  # noqa: S103 - nothing secret in it
            os.chmod(persist, 0o777)  # noqa: S103 - a private temp dir, written by 'nobody'

        text, skipped = render_config(
            records, [(ep.host, ep.port) for ep in proc.endpoints], community=self.community,
            versions=self.versions, user=self.user, drop_to=drop, source=str(proc.recording))
        self.skipped[proc.recording] = skipped
        conf = proc.workdir / "snmpd.conf"
        conf.write_text(text, encoding="latin-1")
        os.chmod(conf, 0o644)
        env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(persist),
               "SNMPCONFPATH": str(proc.workdir)}
        cmd = [binary, "-f", "-C", "-c", str(conf), "-Lf", str(proc.workdir / "snmpd.log"),
               "-I", snmpd_modules(self.versions), "-p", str(proc.workdir / "snmpd.pid"),
               "--noPersistentLoad=1", "--noPersistentSave=1"]
        proc.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,  # noqa: S603
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        served = {rec.oid for rec in records} - {s.oid for s in skipped}
        return next((r.oid for r in records if r.oid in served), "1.3.6.1.2.1.1.1.0")

    def _raise_if_failed(self, silent: set[tuple[str, int]]) -> None:
        for proc in self._processes:
            assert proc.proc is not None
            log = proc.workdir / "snmpd.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if proc.proc.poll() is not None:
                raise RuntimeError(f"snmpd for {proc.recording.name} exited "
                                   f"({proc.proc.returncode}):\n{tail}")
            missing = [ep.address for ep in proc.endpoints if (ep.host, ep.port) in silent]
            if missing:
                raise RuntimeError(f"snmpd for {proc.recording.name}: no answer from "
                                   f"{', '.join(missing[:5])} within {self.startup_timeout}s"
                                   f"\n{tail}")

    def _check_loopback_only(self) -> None:
        """Refuse to run if any snmpd socket is bound outside loopback."""
        for pid in self.pids:
            stray = [s for s in process_sockets(pid) if not _is_loopback(s[1])]
            if stray:
                raise RuntimeError(f"snmpd {pid} bound non-loopback sockets: {stray}")

    def stop(self) -> None:
        """Terminate every process (SIGTERM, then SIGKILL) and remove the work files."""
        for proc in self._processes:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self._processes:
            if proc.proc is None:
                continue
            try:
                proc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.proc.kill()
                proc.proc.wait()
        self._processes = []
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def logs(self) -> Iterator[tuple[Path, str]]:
        """(recording, snmpd log text) of each running process, for diagnosing failures."""
        for proc in self._processes:
            log = proc.workdir / "snmpd.log"
            yield proc.recording, log.read_text(errors="replace") if log.exists() else ""

    def __enter__(self) -> SnmpdFleet:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

"""What each simulated device is asked, derived from the agent's own plan.

For every endpoint the profile is chosen exactly as the agent chooses it (from the
sysObjectID and sysDescr the device serves, with the shipped profiles), and the
net-snmp reference is given the same work as the agent: one ``snmpget`` of the
first-GET OIDs plus ``plan(profile).scalars``, and one ``snmpbulkwalk`` per
``plan(profile).walks`` root; for the status cycle one ``snmpget`` of
``status_oids(profile)``.  The worker checks that the agent matched the same
profile for every device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fleetroom_agent.collect.credentials import make_credential
from fleetroom_agent.collect.interpret import plan
from fleetroom_agent.collect.reader import FALLBACK_PROFILE, FIRST_GET
from fleetroom_agent.collect.status import status_oids
from fleetroom_agent.snmp.types import Credential, Timing, clean_text
from fleetroom_fleetsim.snmpd_fleet import Endpoint, SnmpdUser, read_snmprec, record_value
from fleetroom_fleetsim.synthetic import DATA_DIR
from fleetroom_profiles import ProfileSet, choose_profile

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
NON_PRINTER_DEMO = "demo-switch-cisco"
"""The one demo recording that is not a printer (a Cisco switch: system group only)."""
TIMING = Timing()
"""The agent's defaults (2 s timeout, 1 retry, 25 repetitions), used by both sides."""


def demo_recordings(include_switch: bool = False) -> list[Path]:
    """The SYNTHETIC demo recordings shipped with fleetsim, sorted by name."""
    found = sorted(DATA_DIR.glob("demo-*.snmprec"))
    return [p for p in found if include_switch or p.stem != NON_PRINTER_DEMO]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device and the reads both sides do on it."""

    host: str
    port: int
    recording: str
    profile: str
    scalars: tuple[str, ...]
    """FIRST_GET then the plan's scalars, each once (one ``snmpget``)."""
    walks: tuple[str, ...]
    status_oids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceSpec:
        """Inverse of :meth:`to_json`."""
        return cls(data["host"], int(data["port"]), data["recording"], data["profile"],
                   tuple(data["scalars"]), tuple(data["walks"]), tuple(data["status_oids"]))


@cache
def profiles() -> ProfileSet:
    """The shipped profile set, loaded once per process."""
    return ProfileSet.load()


@cache
def recording_profile(recording: Path) -> str:
    """The profile the agent picks for the device a recording simulates."""
    values = {r.oid: r for r in read_snmprec(recording)}
    oid_rec, descr_rec = values.get(SYS_OBJECT_ID), values.get(SYS_DESCR)
    oid = record_value(oid_rec) if oid_rec else None
    descr = record_value(descr_rec) if descr_rec else None
    oid_text = oid.lstrip(".") if isinstance(oid, str) else None
    descr_text = clean_text(descr) if isinstance(descr, bytes) else None
    match = choose_profile(profiles(), oid_text, descr_text)
    return match.name if match else FALLBACK_PROFILE


def device_specs(endpoints: Iterable[Endpoint]) -> list[DeviceSpec]:
    """A :class:`DeviceSpec` for each endpoint of a fleet."""
    out = []
    for ep in endpoints:
        name = recording_profile(ep.recording)
        prof = profiles().resolve(name)
        todo = plan(prof)
        scalars = tuple(dict.fromkeys((*FIRST_GET, *todo.scalars)))
        out.append(DeviceSpec(ep.host, ep.port, ep.recording.stem, name, scalars,
                              todo.walks, status_oids(prof)))
    return out


def compact_ranges(hosts: Sequence[str]) -> list[str]:
    """Target specs covering exactly ``hosts`` (IPv4), as few ``a.b.c.x-y`` ranges
    as possible, the way a technician would type them."""
    import ipaddress

    nums = sorted(int(ipaddress.IPv4Address(h)) for h in hosts)
    specs: list[str] = []
    start = prev = None
    for n in [*nums, None]:
        if n is not None and prev is not None and n == prev + 1 and n >> 8 == prev >> 8:
            prev = n
            continue
        if start is not None and prev is not None:
            first = ipaddress.IPv4Address(start)
            specs.append(str(first) if start == prev else f"{first}-{prev & 0xFF}")
        start = prev = n
    return specs


# --- Credentials (the simulator's public test credentials, nothing secret) ----------

USER = SnmpdUser()


def credential(version: str) -> Credential:
    """The agent credential for ``v2c`` or ``v3`` (authPriv SHA-256 / AES-256)."""
    if version == "v2c":
        return make_credential(name="bench-v2c", version="2c", community="public")
    return make_credential(name="bench-v3", version="3", user=USER.name,
                           auth_proto=USER.auth_proto, auth_key=USER.auth_key,
                           priv_proto=USER.priv_proto, priv_key=USER.priv_key)


def netsnmp_args(version: str) -> list[str]:
    """The same credential as net-snmp command-line options."""
    if version == "v2c":
        return ["-v2c", "-c", "public"]
    assert USER.auth_key is not None
    assert USER.priv_key is not None
    return ["-v3", "-l", "authPriv", "-u", USER.name, "-a", USER.auth_proto,
            "-A", USER.auth_key, "-x", USER.priv_proto, "-X", USER.priv_key]


def netsnmp_common() -> list[str]:
    """Options for every net-snmp command: numeric OIDs and hex strings (no output
    formatting work to speak of), no MIB loading, the agent's timeout and retries."""
    return ["-On", "-Ox", "-m", "", "-t", f"{TIMING.timeout:g}", "-r", str(TIMING.retries)]

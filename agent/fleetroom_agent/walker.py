"""``fleetroom-agent walk``: record a device so a new model can be profiled.

By default the whole ``1.3.6.1`` tree is walked (bounded by ``max_rows``), as
docuFORM's SNMP walker does, because the counter a dealer needs usually hides in
a vendor subtree nobody has mapped yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetroom_profiles import ProfileSet

from .collect.credentials import CredentialMemory, CredentialSet
from .collect.reader import Failed, Reader
from .discovery.targets import parse_single_target
from .scan import default_client
from .snmp.types import SnmpError, SnmpValue, Timing
from .snmprec import redact as redact_value
from .snmprec import write_recording

DEFAULT_ROOTS = ("1.3.6.1",)


@dataclass
class WalkRecording:
    """The recorded lines, notes about early stops, or an error."""

    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def serial_oids(profiles: ProfileSet) -> list[str]:
    """Every OID any profile reads a serial, name or asset number from."""
    out: list[str] = []
    for lp in profiles.profiles.values():
        out.extend(rule.oid for rule in lp.profile.identity.get("serial", []) if rule.oid)
    return out


async def record(host: str, credentials: Sequence[CredentialSet], profiles: ProfileSet,
                 timing: Timing, *, roots: Sequence[str] = (), redact: bool = False,
                 max_rows: int = 200000) -> WalkRecording:
    """Walk ``roots`` (default all of 1.3.6.1) and return snmprec lines."""
    target = await parse_single_target(host)
    client = default_client()
    out = WalkRecording()
    try:
        reader = Reader(client, profiles, credentials, CredentialMemory(), timing)
        found = await reader.identify(target)
        if isinstance(found, Failed):
            out.error = found.reason
            return out
        cred, _ = found
        rows: list[tuple[str, SnmpValue]] = []
        walk_timing = Timing(timing.timeout, timing.retries, timing.deadline,
                             timing.max_repetitions, max_rows)
        for root in roots or DEFAULT_ROOTS:
            try:
                result = await client.walk(target, cred, root.lstrip("."), walk_timing)
            except SnmpError as exc:
                out.notes.append(f"walk of {root} failed: {exc}")
                continue
            rows.extend(result.rows)
            if result.stopped:
                out.notes.append(f"walk of {root} stopped early ({result.stopped}) after "
                                 f"{len(result.rows)} rows")
        extra = serial_oids(profiles) if redact else []
        if redact:
            rows = [(oid, redact_value(oid, v, extra)) for oid, v in rows]
        out.lines = list(write_recording(rows))
        return out
    finally:
        await client.close()

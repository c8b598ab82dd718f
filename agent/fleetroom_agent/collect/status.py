"""The cheap status cycle: "has anything changed on this device?" in one PDU.

Between full reads the agent asks each printer a handful of OIDs that move when
something happens — prtAlertAllEvents (every new alert bumps it, RFC 3805),
hrPrinterDetectedErrorState, the lifetime page count — plus sysUpTime to spot a
reboot.  Only a device whose answer differs gets a full read, so a fleet can be
watched every few minutes and a critical alert reaches the server quickly,
without walking every table of every printer every time.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetroom_profiles import ResolvedProfile

from ..snmp.client import SnmpClient
from ..snmp.types import Credential, SnmpValue, Target, Timing
from . import oids

MAX_STATUS_OIDS = 20
"""Stay within one PDU (the back-end splits GETs above this many varbinds)."""


@dataclass(frozen=True, slots=True)
class StatusFingerprint:
    """What the status OIDs said, and the uptime at that moment."""

    values: tuple[tuple[str, str], ...]
    uptime_ticks: int | None

    def changed_since(self, before: StatusFingerprint | None) -> bool:
        """True when anything moved, or the device restarted (uptime went back)."""
        if before is None or self.values != before.values:
            return True
        return (self.uptime_ticks is not None and before.uptime_ticks is not None
                and self.uptime_ticks < before.uptime_ticks)


def status_oids(profile: ResolvedProfile) -> tuple[str, ...]:
    """sysUpTime first, then the profile's status OIDs, capped to one PDU."""
    return (oids.SYS_UPTIME, *profile.status_oids)[:MAX_STATUS_OIDS]


async def status_check(client: SnmpClient, target: Target, credential: Credential,
                       profile: ResolvedProfile, timing: Timing | None = None,
                       ) -> StatusFingerprint:
    """One GET of the status OIDs; raises :class:`SnmpError` if the device is silent."""
    got = await client.get(target, credential, status_oids(profile), timing)
    uptime = got.get(oids.SYS_UPTIME)
    values = tuple(
        (oid, v.as_hex() if isinstance(v, SnmpValue) else f"absent:{v}")
        for oid, v in got.items() if oid != oids.SYS_UPTIME)
    return StatusFingerprint(values, uptime.as_int() if isinstance(uptime, SnmpValue) else None)

"""The devices this agent knows: where they are, how to talk to them, what they said.

Persisted in ``devices.json`` so that after a restart the status poll can start
at once (with the credential and profile that worked), and so that an alert
already reported before the restart is not reported again as new.  The status
fingerprint stays in memory only: after a restart the first status answer
becomes the new baseline (the startup rediscovery reads every device fully
anyway, and compares its alerts with the persisted ones).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fleetroom_protocol import Reading

from ..collect.status import StatusFingerprint
from ..snmp.types import Target
from .jsonfile import read_json, write_json

log = logging.getLogger(__name__)

DEVICES_FILE: Final = "devices.json"
FORGET_AFTER_MISSES: Final = 3
"""Rediscoveries in a row a device must miss before it is forgotten (a printer
switched off over a long weekend is not gone)."""


def alert_keys(reading: Reading) -> tuple[frozenset[str], frozenset[str]]:
    """(all alert keys, critical alert keys) of a reading.

    A prtAlertTable row is identified by its index as well as its code: the same
    jam cleared and jammed again gets a new index, and is a new alert.  A device
    whose hrDeviceStatus is down counts as critical too (RFC 3805 2.2.13.2: a
    critical alert means down).
    """
    every: set[str] = set()
    critical: set[str] = set()
    for a in reading.alerts:
        key = f"{a.source}:{a.code}:{a.index}:{a.group}:{a.group_index}"
        every.add(key)
        if a.severity == "critical":
            critical.add(key)
    if reading.status.device_status == "down":
        every.add("hrDeviceStatus:down")
        critical.add("hrDeviceStatus:down")
    return frozenset(every), frozenset(critical)


@dataclass
class DeviceRecord:
    """One device at one address."""

    address: str
    port: int = 161
    hostname: str | None = None
    credential: str | None = None
    profile: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    weak_crypto: bool = False
    alerts: list[str] = field(default_factory=list)
    critical: list[str] = field(default_factory=list)
    last_read_at: str | None = None
    misses: int = 0
    failures: int = 0
    fingerprint: StatusFingerprint | None = field(default=None, compare=False)

    @property
    def target(self) -> Target:
        """Where to send SNMP."""
        return Target(self.address, self.port, self.hostname)

    @property
    def key(self) -> str:
        """``address[:port]``, as :class:`Target` prints it."""
        return str(self.target)

    def as_dict(self) -> dict[str, Any]:
        """Persisted fields (the fingerprint is not one)."""
        return {k: v for k, v in vars(self).items() if k != "fingerprint"}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeviceRecord:
        """Tolerant of missing fields; raises ``TypeError``/``ValueError`` on nonsense."""
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw and k != "fingerprint"}
        rec = cls(**known)
        if not isinstance(rec.address, str) or not isinstance(rec.port, int):
            raise ValueError("bad address or port")
        return rec


class DeviceRegistry:
    """Known devices by ``address[:port]``, persisted on every change that matters."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DEVICES_FILE
        self.devices: dict[str, DeviceRecord] = {}
        raw = read_json(self.path)
        for item in raw.get("devices", []) if isinstance(raw, dict) else []:
            try:
                rec = DeviceRecord.from_dict(item)
            except (TypeError, ValueError) as exc:
                log.warning("ignoring a damaged entry in %s: %s", self.path, exc)
                continue
            self.devices[rec.key] = rec

    def save(self) -> None:
        """Write ``devices.json``; a failure is logged, the agent keeps going."""
        try:
            write_json(self.path, {"devices": [d.as_dict() for d in self.devices.values()]})
        except OSError as exc:
            log.error("cannot save %s: %s", self.path, exc)

    def get_or_add(self, target: Target) -> DeviceRecord:
        """The record for ``target`` (new if unknown)."""
        key = str(target)
        rec = self.devices.get(key)
        if rec is None:
            rec = DeviceRecord(target.address, target.port, target.hostname)
            self.devices[key] = rec
        elif target.hostname and rec.hostname != target.hostname:
            rec.hostname = target.hostname
        return rec

    def drop_moved(self, rec: DeviceRecord) -> None:
        """Forget other addresses that held the same device (manufacturer + serial):
        identity is the serial, the IP is an attribute that changes (DHCP)."""
        if not rec.serial:
            return
        for key, other in list(self.devices.items()):
            if (other is not rec and other.serial == rec.serial
                    and other.manufacturer == rec.manufacturer):
                log.info("%s moved from %s to %s", rec.serial, key, rec.key)
                del self.devices[key]

    def weak_crypto(self) -> list[str]:
        """Targets last read with weak SNMP crypto."""
        return sorted(d.key for d in self.devices.values() if d.weak_crypto)

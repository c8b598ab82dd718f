"""Read one device: find a working credential, classify, choose a profile, poll.

The only module of collection that does I/O.  Every outcome is a value — a
:class:`Reading`, a :class:`Skipped` with the reason, or a :class:`Failed` with a
clear message — so one bad device never stops a scan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fleetroom_profiles import ProfileSet, choose_profile
from fleetroom_protocol import Reading

from ..snmp.client import SnmpClient
from ..snmp.types import Credential, SnmpError, SnmpValue, Target, Timing, WalkResult
from . import oids
from .credentials import CredentialMemory, CredentialSet
from .interpret import interpret, plan
from .snapshot import DeviceSnapshot

FALLBACK_PROFILE = "generic-printer"
PRT_GENERAL_PROBE = "1.3.6.1.2.1.43.5.1.1.1.1"  # prtGeneralConfigChanges.1 (RFC 3805)
FIRST_GET = (*oids.SYSTEM_SCALARS, oids.HR_DEVICE_TYPE_1, PRT_GENERAL_PROBE)
NON_PRINTER_KINDS = frozenset({"scanner"})


@dataclass(frozen=True, slots=True)
class Skipped:
    """Answered SNMP but is not a printer; ``reason`` is shown in verbose mode."""

    target: Target
    reason: str
    sys_descr: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """Could not be read at all (no answer, auth failure); the reason is for humans."""

    target: Target
    reason: str
    kind: str = "error"


DeviceResult = Reading | Skipped | Failed


@dataclass
class Reader:
    """Reads devices with one shared client, profile set and credential memory."""

    client: SnmpClient
    profiles: ProfileSet
    credentials: Sequence[CredentialSet]
    memory: CredentialMemory
    timing: Timing = Timing()  # noqa: RUF009 (frozen dataclass, shared safely)

    async def identify(self, target: Target) -> tuple[Credential, dict[str, SnmpValue]] | Failed:
        """First PDU: system group + classification OIDs, trying credentials in order."""
        attempts: list[str] = []
        for cred in self.memory.order(target, self.credentials):
            try:
                got = await self.client.get(target, cred, FIRST_GET, self.timing)
            except SnmpError as exc:
                attempts.append(f"{cred.describe()}: {exc.kind}")
                continue
            values = {k: v for k, v in got.items() if isinstance(v, SnmpValue)}
            if not values:
                attempts.append(f"{cred.describe()}: answered with no values")
                continue
            self.memory.remember(target, cred)
            return cred, values
        if not attempts:
            return Failed(target, "no credential set applies to this address", "config")
        kind = "timeout" if all(a.endswith("timeout") for a in attempts) else "error"
        return Failed(target, "no answer: " + "; ".join(attempts), kind)

    async def read(self, target: Target, *, require_printer: bool = True,
                   identified: tuple[Credential, dict[str, SnmpValue]] | None = None,
                   ) -> DeviceResult:
        """Full reading of one device, or why not (``identified``: a first GET
        already done by a sweep, so it is not asked twice)."""
        started = datetime.now(UTC)
        t0 = time.monotonic()
        found = identified or await self.identify(target)
        if isinstance(found, Failed):
            return found
        cred, first = found
        snap = DeviceSnapshot(gets=dict(first))
        sys_oid = first.get(oids.SYS_OBJECT_ID)
        sys_descr = first.get(oids.SYS_DESCR)
        oid_text = sys_oid.as_text().lstrip(".") if sys_oid is not None else None
        descr_text = sys_descr.as_text() if sys_descr is not None else None
        match = choose_profile(self.profiles, oid_text, descr_text)
        verdict = await self._classify(target, cred, first, match is not None)
        if verdict is not None and require_printer:  # verdict is None once a profile matched
            return Skipped(target, verdict, descr_text)
        if match is not None:
            kind = self.profiles.resolve(match.name).device_kind
            if kind in NON_PRINTER_KINDS and require_printer:
                return Skipped(target, f"{kind} ({match.reason}), not a printer", descr_text)
        profile_name = match.name if match else FALLBACK_PROFILE
        reason = match.reason if match else (
            "no vendor profile matched; reading the standard Printer-MIB and Host Resources")
        profile = self.profiles.resolve(profile_name)
        todo = plan(profile)
        await self._poll(target, cred, todo.scalars, todo.walks, snap)
        return interpret(snap, profile, reason, target=target, snmp_version=cred.version,
                         credential=cred.name, started=started,
                         duration_ms=int((time.monotonic() - t0) * 1000))

    async def _classify(self, target: Target, cred: Credential, first: dict[str, SnmpValue],
                        profile_matched: bool) -> str | None:
        """``None`` when the device is a printer, else the reason it is not."""
        dev_type = first.get(oids.HR_DEVICE_TYPE_1)
        if dev_type is not None and dev_type.as_text().lstrip(".") == oids.HR_DEVICE_PRINTER:
            return None
        if PRT_GENERAL_PROBE in first:
            return None
        if profile_matched:
            return None
        # The printer may not be hrDeviceIndex 1: look at the whole hrDeviceType column.
        try:
            walk = await self.client.walk(target, cred, f"{oids.HR_DEVICE_ENTRY}.2", self.timing)
        except SnmpError:
            walk = WalkResult()
        if any(v.as_text().lstrip(".") == oids.HR_DEVICE_PRINTER for _, v in walk.rows):
            return None
        what = "no hrDevicePrinter row, no Printer-MIB answer and no matching profile"
        return f"not a printer: {what}"

    async def _poll(self, target: Target, cred: Credential, scalars: Sequence[str],
                    walks: Sequence[str], snap: DeviceSnapshot) -> None:
        """GET the remaining scalars while the subtrees are walked (one stream for
        all of them, see :meth:`SnmpClient.walk_many`)."""
        todo = [o for o in scalars if o not in snap.gets]

        async def do_get() -> None:
            if not todo:
                return
            try:
                snap.gets.update(await self.client.get(target, cred, todo, self.timing))
            except SnmpError as exc:
                for oid in todo:
                    snap.failed[oid] = exc.kind

        async def do_walks() -> None:
            if not walks:
                return
            try:
                got = await self.client.walk_many(target, cred, walks, self.timing)
            except SnmpError as exc:
                for root in walks:
                    snap.failed[root] = exc.kind
                return
            for root, result in got.items():
                if isinstance(result, SnmpError):
                    snap.failed[root] = result.kind
                else:
                    snap.walks[root] = result

        await asyncio.gather(do_get(), do_walks())

"""From SNMP to the outbox: discovery, meter reads, status polls and the alert fast path.

* **Meter reads** (and the month-end read) read every known device fully and put
  each reading on the ``readings`` stream, normal priority, coalescible per device
  — under disk pressure the outbox keeps the newest counters of each device.
  Month-end readings get their own coalesce key per month, so the billing
  cut-off survives even when later readings are coalesced.
* **Status polls** ask each device the handful of status OIDs in one PDU
  (:func:`~fleetroom_agent.collect.status.status_check`).  Only when an alert-
  relevant value moved (alert counter, error state, a reboot — not merely the
  page counter) is the device read fully.  A reading whose *critical* alerts are
  new goes on the ``alerts`` stream with ``Priority.CRITICAL`` and the sender is
  woken, so it leaves within seconds; other alert changes go there with HIGH
  priority and travel with the next batch.
* **Discovery** sweeps the configured targets, reads what answers, and keeps the
  device list (with the credential that worked) for the polls.

Every address is checked against the local allowlist right before it is polled.
One device that answers garbage, times out or trips over a broken profile is
logged and recorded; the others are read all the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fleetroom_profiles import ProfileSet
from fleetroom_protocol import Reading
from fleetroom_protocol.messages import STREAM_ALERTS, STREAM_READINGS

from ..collect.credentials import CredentialMemory, CredentialSet
from ..collect.reader import DeviceResult, Failed, Reader, Skipped
from ..collect.status import status_check
from ..discovery.sweep import sweep
from ..discovery.targets import TargetSpecError, plan
from ..outbox import NewItem, Outbox, OutboxError, Priority
from ..scan import READS_PER_CORE, seed_memory, sweep_probes
from ..snmp.client import SnmpClient
from ..snmp.types import Credential, SnmpError, Target, Timing
from .allowlist import Allowlist
from .devices import FORGET_AFTER_MISSES, DeviceRecord, DeviceRegistry, alert_keys
from .state import RuntimeState, iso, utcnow

log = logging.getLogger(__name__)

COUNTER_OID_PREFIXES: Final = ("1.3.6.1.2.1.43.10.2.1.4.",)
"""Status OIDs that move with every page printed (prtMarkerLifeCount): a change
there alone is usage, which the meter reads collect, not an event."""


@dataclass
class Outcome:
    """What one collection run did (for the job record and command results)."""

    read: int = 0
    failed: int = 0
    skipped: int = 0
    refused: int = 0
    alerts: int = 0
    critical: int = 0
    addresses: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for humans."""
        parts = [f"{self.read} read"]
        for name in ("failed", "skipped", "refused", "alerts", "critical"):
            n = getattr(self, name)
            if n:
                parts.append(f"{n} {name}")
        return ", ".join(parts)


def _alert_relevant(fp_values: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((oid, v) for oid, v in fp_values if not oid.startswith(COUNTER_OID_PREFIXES))


def reading_coalesce_key(reading: Reading, target: str) -> str:
    """Per device: manufacturer + serial when known (identity is the serial, not
    the IP), the address otherwise."""
    ident = reading.identity
    if ident.serial:
        return f"device:{ident.manufacturer or ident.vendor or '?'}:{ident.serial}"
    return f"device:{target}"


class Collector:
    """Reads devices and fills the outbox; one instance per running agent."""

    def __init__(self, *, client: SnmpClient, profiles: ProfileSet,
                 credentials: Sequence[CredentialSet], allowlist: Allowlist,
                 outbox: Outbox, registry: DeviceRegistry, state: RuntimeState,
                 timing: Timing, wake: Callable[[], None],
                 scan_targets: Sequence[str] = (), scan_exclude: Sequence[str] = (),
                 scan_allow: frozenset[str] = frozenset(), max_addresses: int = 65536,
                 concurrency: int | None = None) -> None:
        self.client = client
        self.credentials = list(credentials)
        self.allowlist = allowlist
        self.outbox = outbox
        self.registry = registry
        self.state = state
        self.timing = timing
        self.wake = wake
        self.scan_targets = list(scan_targets)
        self.scan_exclude = list(scan_exclude)
        self.scan_allow = scan_allow
        self.max_addresses = max_addresses
        self.reads = asyncio.Semaphore(concurrency or READS_PER_CORE * (os.cpu_count() or 1))
        self._locks: dict[str, asyncio.Lock] = {}
        memory = CredentialMemory({rec.key: rec.credential for rec in registry.devices.values()
                                   if rec.credential})
        self.reader = Reader(client, profiles, self.credentials, memory, timing)

    # ------------------------------------------------------------------ helpers

    @property
    def profiles(self) -> ProfileSet:
        """The profile set in use."""
        return self.reader.profiles

    def set_profiles(self, profiles: ProfileSet) -> None:
        """Switch to a new profile set (after a bundle update); reads in flight finish
        with the old one."""
        self.reader.profiles = profiles

    def _credential(self, name: str | None) -> Credential | None:
        for s in self.credentials:
            if s.credential.name == name:
                return s.credential
        return None

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def put_items(self, items: list[NewItem]) -> bool:
        """Put items durably; a full disk or a broken store is recorded, not raised."""
        try:
            await asyncio.to_thread(self.outbox.put_many, items)
        except (sqlite3.Error, OSError, OutboxError) as exc:
            self.state.error("outbox", f"could not store {len(items)} item(s): {exc}")
            self.state.count("items_not_stored", len(items))
            log.error("outbox put failed: %s", exc)
            return False
        for it in items:
            self.state.count(f"put:{it.stream}")
        return True

    # ------------------------------------------------------------------ reading

    async def _read_device(self, rec: DeviceRecord) -> DeviceResult:
        """A full read of one known device, under the concurrency bound; never raises."""
        target = rec.target
        if not self.allowlist.permits(target):
            return Failed(target, f"{target} is outside the local allowlist", "refused")
        async with self.reads, self._lock(rec.key):
            try:
                result = await self.reader.read(target)
                if isinstance(result, Reading):
                    await self._baseline(rec, result)
                return result
            except SnmpError as exc:
                return Failed(target, str(exc), exc.kind)
            except Exception as exc:  # a broken profile, a decoder bug, a garbage reply
                log.exception("reading %s failed", target)
                return Failed(target, f"{type(exc).__name__}: {exc}", "error")

    async def _baseline(self, rec: DeviceRecord, reading: Reading) -> None:
        """The status values right after a full read become the poll baseline.

        Without it the first status poll after a read would become the baseline
        unchecked, and an alert raised in between would wait for the next full read
        (a day by default).  One PDU per full read; on failure the first poll takes
        the baseline as before.
        """
        cred = self._credential(reading.credential)
        if cred is None or reading.profile is None:
            return
        try:
            profile = self.profiles.resolve(reading.profile.name)
            rec.fingerprint = await status_check(self.client, rec.target, cred, profile,
                                                 self.timing)
        except Exception as exc:
            log.debug("no status baseline for %s: %s", rec.key, exc)
            rec.fingerprint = None

    def _learn(self, rec: DeviceRecord, reading: Reading) -> None:
        rec.credential = reading.credential
        rec.profile = reading.profile.name if reading.profile else None
        rec.serial = reading.identity.serial
        rec.manufacturer = reading.identity.manufacturer or reading.identity.vendor
        rec.model = reading.identity.model
        cred = self._credential(reading.credential)
        rec.weak_crypto = cred.weak_crypto() if cred is not None else rec.weak_crypto
        rec.last_read_at = iso(utcnow())
        rec.failures = 0
        rec.misses = 0

    async def _store(self, rec: DeviceRecord, reading: Reading, outcome: Outcome, *,
                     coalesce_key: str | None = None) -> None:
        """Put a full reading where it belongs: ``alerts`` if its alerts changed
        (critical and woken up when a critical one is new), ``readings`` otherwise.

        A device seen for the first time goes to ``readings`` unless it has a
        critical alert: its warnings are news to nobody's pager."""
        before_all, before_crit = frozenset(rec.alerts), frozenset(rec.critical)
        first_sight = rec.last_read_at is None
        now_all, now_crit = alert_keys(reading)
        self._learn(rec, reading)
        payload = reading.to_json().encode()
        new_critical = now_crit - before_crit
        if new_critical:
            item = NewItem(STREAM_ALERTS, payload, Priority.CRITICAL)
        elif now_all != before_all and not first_sight:
            item = NewItem(STREAM_ALERTS, payload, Priority.HIGH)
        else:
            item = NewItem(STREAM_READINGS, payload, Priority.NORMAL,
                           coalesce_key or reading_coalesce_key(reading, rec.key))
        if await self.put_items([item]):
            # Remember the alerts only once they are safely stored: if the put
            # failed (disk full) the next poll sees them as new and tries again.
            rec.alerts, rec.critical = sorted(now_all), sorted(now_crit)
        outcome.read += 1
        if item.stream == STREAM_ALERTS:
            outcome.alerts += 1
        if new_critical:
            outcome.critical += 1
            log.warning("critical alert on %s: %s", rec.key, ", ".join(sorted(new_critical)))
            self.wake()

    def _record_failure(self, rec: DeviceRecord, result: Failed | Skipped,
                        outcome: Outcome) -> None:
        if isinstance(result, Skipped):
            outcome.skipped += 1
            return
        if result.kind == "refused":
            outcome.refused += 1
        else:
            outcome.failed += 1
            rec.failures += 1
        outcome.errors.append(f"{rec.key}: {result.reason}"[:300])

    @staticmethod
    async def _guarded(coro: Coroutine[Any, Any, None], key: str, outcome: Outcome) -> None:
        """One device's work inside a TaskGroup: whatever it raises stays with it."""
        try:
            await coro
        except Exception as exc:
            log.exception("collecting %s failed", key)
            outcome.failed += 1
            outcome.errors.append(f"{key}: {type(exc).__name__}: {exc}"[:300])

    async def read_known(self, *, month: str | None = None) -> Outcome:
        """Read every known device fully (the scheduled meter read, or the month-end
        read when ``month`` is given)."""
        outcome = Outcome()

        async def one(rec: DeviceRecord) -> None:
            result = await self._read_device(rec)
            if isinstance(result, Reading):
                key = (f"month-end:{month}:{reading_coalesce_key(result, rec.key)}"
                       if month else None)
                await self._store(rec, result, outcome, coalesce_key=key)
            else:
                self._record_failure(rec, result, outcome)

        async with asyncio.TaskGroup() as tg:
            for rec in list(self.registry.devices.values()):
                tg.create_task(self._guarded(one(rec), rec.key, outcome))
        self.registry.save()
        if outcome.read:
            self.wake()  # a finished round goes out now, as one batch, not at the next poll
        return outcome

    async def read_target(self, target: Target) -> tuple[DeviceResult, Outcome]:
        """Read one device now (the ``read-device`` command); allowlist enforced."""
        outcome = Outcome()
        if not self.allowlist.permits(target):
            outcome.refused += 1
            return Failed(target, f"{target} is outside the local allowlist", "refused"), outcome
        rec = self.registry.get_or_add(target)
        result = await self._read_device(rec)
        if isinstance(result, Reading):
            await self._store(rec, result, outcome)
        else:
            self._record_failure(rec, result, outcome)
            if rec.credential is None and rec.last_read_at is None:
                del self.registry.devices[rec.key]  # never a device: do not poll it
        self.registry.save()
        return result, outcome

    # ------------------------------------------------------------------ status

    async def _status_one(self, rec: DeviceRecord, outcome: Outcome) -> None:
        cred = self._credential(rec.credential)
        if cred is None or rec.profile is None or not self.allowlist.permits(rec.target):
            return  # not read successfully yet (or no longer allowed): rediscovery decides
        try:
            profile = self.profiles.resolve(rec.profile)
        except Exception:
            profile = None
        if profile is not None:
            async with self.reads:
                if self._lock(rec.key).locked():
                    return  # a full read of this device is under way
                try:
                    fp = await status_check(self.client, rec.target, cred, profile, self.timing)
                except SnmpError as exc:
                    rec.failures += 1
                    outcome.failed += 1
                    outcome.errors.append(f"{rec.key}: {exc}"[:300])
                    return
                except Exception as exc:
                    log.exception("status check of %s failed", rec.key)
                    outcome.failed += 1
                    outcome.errors.append(f"{rec.key}: {type(exc).__name__}: {exc}"[:300])
                    return
            before = rec.fingerprint
            rec.fingerprint = fp
            rec.failures = 0
            if before is None:
                return  # first answer since start: the baseline, nothing to compare
            moved = _alert_relevant(fp.values) != _alert_relevant(before.values)
            rebooted = fp.changed_since(before) and fp.values == before.values
            if not (moved or rebooted):
                return
        result = await self._read_device(rec)
        if isinstance(result, Reading):
            await self._store(rec, result, outcome)
        else:
            self._record_failure(rec, result, outcome)

    async def status_poll(self) -> Outcome:
        """The cheap status check of every known device (see the module doc)."""
        outcome = Outcome()
        async with asyncio.TaskGroup() as tg:
            for rec in list(self.registry.devices.values()):
                tg.create_task(self._guarded(self._status_one(rec, outcome), rec.key, outcome))
        if outcome.read:
            self.registry.save()
        return outcome

    # ------------------------------------------------------------------ discovery

    async def discover(self, targets: Sequence[str] | None = None) -> Outcome:
        """Sweep ``targets`` (default: the configured ones), read what answers.

        Commanded targets were checked against the allowlist by the caller; every
        address is checked again here after expansion and name resolution.
        """
        outcome = Outcome()
        specs = list(targets) if targets is not None else self.scan_targets
        if not specs:
            return outcome
        t0 = time.monotonic()
        try:
            scan_plan = plan(specs, self.scan_exclude, max_addresses=self.max_addresses,
                             allow=self.scan_allow)
        except TargetSpecError as exc:
            outcome.errors.append(str(exc))
            outcome.failed += 1
            return outcome
        found: list[Target] = []
        async for item in scan_plan.targets():
            if isinstance(item, TargetSpecError):
                outcome.errors.append(str(item))
                outcome.failed += 1
            elif not self.allowlist.permits(item):
                outcome.refused += 1
                outcome.errors.append(f"{item}: outside the local allowlist")
            else:
                found.append(item)
        outcome.addresses = len(found)
        hits = [hit async for hit in sweep(found, lambda t: sweep_probes(t, self.credentials),
                                           timeout=self.timing.timeout,
                                           retries=self.timing.retries)]
        answered = {str(h.target) for h in hits}

        async def one(target: Target) -> None:
            rec = self.registry.get_or_add(target)
            result = await self._read_device(rec)
            if isinstance(result, Reading):
                await self._store(rec, result, outcome)
                self.registry.drop_moved(rec)
            else:
                self._record_failure(rec, result, outcome)
                if rec.last_read_at is None:
                    self.registry.devices.pop(rec.key, None)  # answered, but not a printer

        async with asyncio.TaskGroup() as tg:
            for hit in hits:
                if str(hit.target) not in self.reader.memory.worked:
                    seed_memory(self.reader.memory, hit, self.credentials)
                tg.create_task(self._guarded(one(hit.target), str(hit.target), outcome))
        if targets is None:
            swept = {str(t) for t in found}
            for key, rec in list(self.registry.devices.items()):
                if key in swept and key not in answered:
                    rec.misses += 1
                    if rec.misses >= FORGET_AFTER_MISSES:
                        log.info("forgetting %s: silent for %d rediscoveries", key, rec.misses)
                        del self.registry.devices[key]
        self.registry.save()
        if outcome.read:
            self.wake()
        log.info("discovery: %d address(es), %s in %.1f s", len(found), outcome.summary(),
                 time.monotonic() - t0)
        return outcome

    def weak_crypto_devices(self) -> list[str]:
        """For ``AgentState.weak_crypto_devices``."""
        return self.registry.weak_crypto()

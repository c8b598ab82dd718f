"""Scan orchestration: expand targets, read devices concurrently, report outcomes.

Two limits, because the two phases cost different things: *finding* devices is
mostly waiting for silent addresses (cheap, many in flight), *reading* a printer
is mostly CPU for BER and crypto, so it is bounded by the number of cores
(pysnmp's own requests time out when the event loop is saturated).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleetroom_profiles import ProfileSet
from fleetroom_protocol import Reading
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .collect.credentials import CredentialMemory, CredentialSet
from .collect.reader import DeviceResult, Failed, Reader, Skipped
from .discovery.sweep import Alive, SweepProbe, sweep
from .discovery.targets import TargetSpecError, parse_single_target, plan
from .snmp.client import SnmpClient
from .snmp.types import Target, Timing

READS_PER_CORE = 16
"""Full reads in flight per CPU core: enough to hide network latency, few enough
that the event loop never starves its own timers (measured in bench/)."""


@dataclass
class ScanOptions:
    """What to scan and how."""

    targets: Sequence[str]
    credentials: Sequence[CredentialSet]
    exclude: Sequence[str] = ()
    max_addresses: int = 65536
    allow: frozenset[str] = frozenset()
    timing: Timing = field(default_factory=Timing)
    concurrency: int | None = None
    progress: bool = False


@dataclass
class ScanOutcome:
    """Everything a scan found; ``error`` is set when the scan could not start."""

    readings: list[Reading] = field(default_factory=list)
    not_read: list[Skipped | Failed] = field(default_factory=list)
    """Devices that answered the sweep but were not read, and target errors."""
    addresses: int = 0
    silent: int = 0
    """Addresses that answered no probe (kept as a count: a /16 is mostly silence)."""
    seconds: float = 0.0
    error: str | None = None

    @property
    def skipped(self) -> int:
        """Devices that answered but are not printers."""
        return sum(isinstance(x, Skipped) for x in self.not_read)


def default_client() -> SnmpClient:
    """The production SNMP back-end (pysnmp 7)."""
    from .snmp.pysnmp_backend import PysnmpClient

    return PysnmpClient()


async def run_scan(opts: ScanOptions, profiles: ProfileSet, *,
                   client: SnmpClient | None = None,
                   on_reading: Callable[[Reading], None] | None = None) -> ScanOutcome:
    """Scan every target; ``on_reading`` is called as each printer is read."""
    t0 = time.monotonic()
    outcome = ScanOutcome()
    try:
        scan_plan = plan(opts.targets, opts.exclude, max_addresses=opts.max_addresses,
                         allow=opts.allow)
    except TargetSpecError as exc:
        outcome.error = str(exc)
        return outcome
    own_client = client is None
    client = client or default_client()
    reader = Reader(client, profiles, opts.credentials, CredentialMemory(), opts.timing)
    reads = asyncio.Semaphore(opts.concurrency or READS_PER_CORE * (os.cpu_count() or 1))

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=True, disable=not opts.progress)
    try:
        with progress:
            targets: list[Target] = []
            async for item in scan_plan.targets():
                if isinstance(item, TargetSpecError):
                    outcome.not_read.append(Failed(Target("-"), str(item), "config"))
                else:
                    targets.append(item)
            outcome.addresses = len(targets)
            sweeping = progress.add_task("finding devices", total=len(targets))
            reading = progress.add_task("reading", total=0)

            async def one(target: Target) -> None:
                # Identify and read under one CPU-bounded slot: too many devices in
                # flight starve the event loop and pysnmp times out its own requests.
                async with reads:
                    found = await reader.identify(target)
                    if isinstance(found, Failed):
                        result: DeviceResult = found
                    else:
                        result = await reader.read(target, identified=found)
                if isinstance(result, Reading):
                    outcome.readings.append(result)
                    if on_reading is not None:
                        on_reading(result)
                elif isinstance(result, Failed) and result.kind == "timeout":
                    outcome.silent += 1
                else:
                    outcome.not_read.append(result)
                progress.advance(reading)

            # Two phases on purpose: while reads saturate the CPU, the event loop
            # serves the sweep's socket late and answers would miss their deadline.
            hits = []
            async for hit in sweep(targets, lambda t: sweep_probes(t, opts.credentials),
                                   timeout=opts.timing.timeout, retries=opts.timing.retries):
                hits.append(hit)
                progress.advance(sweeping)
            progress.update(sweeping, completed=len(targets))
            progress.update(reading, total=len(hits))
            alive = len(hits)
            async with asyncio.TaskGroup() as tg:
                for hit in hits:
                    seed_memory(reader.memory, hit, opts.credentials)
                    tg.create_task(one(hit.target))
            outcome.silent += len(targets) - alive
    finally:
        if own_client:
            await client.close()
    outcome.seconds = time.monotonic() - t0
    return outcome


def sweep_probes(target: Target, credentials: Sequence[CredentialSet]) -> list[SweepProbe]:
    """What the sweep may send to ``target``: each applicable community once, and one
    keyless SNMPv3 discovery request if any v3 set applies."""
    probes: list[SweepProbe] = []
    for s in credentials:
        if not s.applies_to(target.address):
            continue
        c = s.credential
        probe = SweepProbe("3") if c.version == "3" else SweepProbe(c.version, c.community)
        if probe not in probes:
            probes.append(probe)
    return probes


def seed_memory(memory: CredentialMemory, hit: Alive,
                credentials: Sequence[CredentialSet]) -> None:
    """Try first the credential whose probe the device answered."""
    for s in credentials:
        c = s.credential
        if not s.applies_to(hit.target.address):
            continue
        if (hit.probe.version == "3" and c.version == "3") or (
                c.version == hit.probe.version and c.community == hit.probe.community):
            memory.remember(hit.target, c)
            return


async def probe_one(host: str, credentials: Sequence[CredentialSet], profiles: ProfileSet,
                    timing: Timing, recording: Path | None = None) -> DeviceResult:
    """Read one device fully (``probe``); non-printers are read too, as far as they go."""
    if recording is not None:
        from .snmp.recording_backend import RecordingClient

        # A recording has no address; the argument only labels the output.
        target = Target(address="", port=0, hostname=host)
        client: SnmpClient = RecordingClient(recording)
    else:
        target = await parse_single_target(host)
        client = default_client()
    reader = Reader(client, profiles, credentials, CredentialMemory(), timing)
    try:
        return await reader.read(target, require_printer=False)
    finally:
        await client.close()

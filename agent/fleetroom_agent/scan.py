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
from .discovery.targets import TargetSpecError, parse_single_target, plan
from .snmp.client import SnmpClient
from .snmp.types import Target, Timing

READS_PER_CORE = 16
"""Full reads in flight per CPU core: enough to hide network latency, few enough
that the event loop never starves its own timers (measured in bench/)."""
PROBES_IN_FLIGHT = 512
"""First GETs in flight during a sweep: silent addresses cost a timer, not CPU."""


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
    addresses: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def skipped(self) -> int:
        """Devices that answered but are not printers."""
        return sum(isinstance(x, Skipped) for x in self.not_read)

    @property
    def silent(self) -> int:
        """Addresses that did not answer with any credential set."""
        return sum(isinstance(x, Failed) and x.kind == "timeout" for x in self.not_read)


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
    in_flight = asyncio.Semaphore(max(PROBES_IN_FLIGHT, opts.concurrency or 0))

    progress = Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=True, disable=not opts.progress)
    try:
        with progress:
            task = progress.add_task("scan", total=scan_plan.count + len(scan_plan.hostnames))

            async def one(target: Target) -> None:
                try:
                    found = await reader.identify(target)
                    if isinstance(found, Failed):
                        result: DeviceResult = found
                    else:
                        async with reads:
                            result = await reader.read(target, identified=found)
                    if isinstance(result, Reading):
                        outcome.readings.append(result)
                        if on_reading is not None:
                            on_reading(result)
                    else:
                        outcome.not_read.append(result)
                    progress.advance(task)
                finally:
                    in_flight.release()

            async with asyncio.TaskGroup() as tg:
                async for target in scan_plan.targets():
                    if isinstance(target, TargetSpecError):
                        outcome.not_read.append(Failed(Target("-"), str(target), "config"))
                        continue
                    outcome.addresses += 1
                    await in_flight.acquire()
                    tg.create_task(one(target))
    finally:
        if own_client:
            await client.close()
    outcome.seconds = time.monotonic() - t0
    return outcome


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

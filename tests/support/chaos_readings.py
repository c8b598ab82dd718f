"""Readings for the chaos tests and the transport benchmark: what a real site sends.

Each payload is a complete ``fleetroom.reading/1`` snapshot (identity, twelve
counters, four supplies, sometimes a critical alert), shaped like the readings the
agent's collector puts into the outbox, and serialised as *canonical* JSON (sorted
keys, no spaces).  Canonical bytes matter for the ground truth: the outbox journal
records the SHA-256 of the payload bytes, and the server keeps the payload only as
parsed JSON inside the stored batch — re-serialising that canonically gives the same
bytes, so the two hashes can be compared one to one.

Every reading of one run is unique by (serial, taken_at): the fleet app deduplicates
on that pair, so a reading that reached the server twice would show up as a
duplicate there too.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fleetroom_protocol import Alert, Counter, Identity, ProfileMatch, Reading, Status, Supply
from fleetroom_protocol.messages import Schedule

COUNTERS: Final = ("total", "mono", "colour", "print_total", "print_mono", "print_colour",
                   "copy_total", "copy_mono", "copy_colour", "scan_total", "fax_total",
                   "duplex")
OUTAGE_HOURS: Final = 72


def canonical(obj: Any) -> bytes:
    """The one serialisation both sides hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def payload_hash(obj: Any) -> str:
    """SHA-256 of :func:`canonical` ``obj``."""
    return hashlib.sha256(canonical(obj)).hexdigest()


def serial(tag: str, device: int) -> str:
    """The serial number of simulated device ``device`` of run ``tag``."""
    return f"{tag}-{device:05d}"


def make_reading(tag: str, device: int, taken_at: datetime, step: int) -> Reading:
    """One reading of device ``device`` at ``taken_at``; counters grow with ``step``."""
    jam = step % 17 == 5 and device % 3 == 0
    octets = f"{10}.{device // 65536 % 256}.{device // 256 % 256}.{device % 256}"
    base = 100_000 + device * 1_000 + step * 37
    return Reading(
        taken_at=taken_at, duration_ms=300 + device % 200, target=octets, snmp_version="2c",
        credential="public",
        profile=ProfileMatch(name="generic-printer", chain=["printer-mib"], reason="chaos"),
        identity=Identity(vendor="ChaosCo", manufacturer="ChaosCo", model=f"C{device % 7}",
                          serial=serial(tag, device), ip=octets, sys_name=f"PRN-{device:05d}",
                          device_kind="printer"),
        counters=[Counter(name=n, value=base + i, unit="impressions",
                          source=f"1.3.6.1.2.1.43.10.2.1.4.1.{i + 1}", width=32)
                  for i, n in enumerate(COUNTERS)],
        supplies=[Supply(index=i + 1, type="toner", colour=c, description=f"Toner {c}",
                         level_percent=float(95 - (step + i) % 90), raw_level=95 - (step + i) % 90,
                         raw_max=100, unit="percent")
                  for i, c in enumerate(("black", "cyan", "magenta", "yellow"))],
        alerts=[Alert(source="prtAlertTable", severity="critical", code="jam", index=step,
                      group="mediaPath", group_index=1)] if jam else [],
        status=Status(device_status="down" if jam else "running",
                      printer_status="other" if jam else "idle",
                      error_state_raw="04" if jam else "00"),
    )


def reading_payload(reading: Reading) -> bytes:
    """The outbox payload of ``reading``: its wire JSON, canonical."""
    return canonical(json.loads(reading.to_json()))


def device_key(reading: Reading) -> str:
    """The coalesce key the collector gives a reading (manufacturer + serial)."""
    ident = reading.identity
    return f"device:{ident.manufacturer or ident.vendor or '?'}:{ident.serial}"


def outage_reads(schedule: Schedule, hours: float = OUTAGE_HOURS) -> int:
    """Meter reads per device the schedule makes in ``hours`` (the month-end read aside)."""
    return math.ceil(hours * 3600 / schedule.meter_read_s)


def outage_plan(devices: int, schedule: Schedule, *, end: datetime | None = None,
                hours: float = OUTAGE_HOURS) -> list[tuple[int, datetime, int]]:
    """(device, taken_at, step) of every meter read a ``devices`` site makes while the
    server is away for ``hours``, in the order the collector would store them (read
    round by read round).  Devices within one round are spread over a minute, as a
    semaphore-bounded collector reads them."""
    end = end or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    reads = outage_reads(schedule, hours)
    start = end - timedelta(hours=hours)
    out = []
    for step in range(reads):
        round_at = start + timedelta(seconds=step * schedule.meter_read_s)
        for d in range(devices):
            out.append((d, round_at + timedelta(milliseconds=60_000 * d // max(1, devices)),
                        step))
    return out

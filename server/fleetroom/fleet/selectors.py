"""Reads of the fleet app, always through the tenant scope (architecture rule 5).

Every function takes the acting ``user`` and narrows with ``for_user(user,
view_fleet)``: no membership means nothing.  Time series are read by the
``(device, name, taken_at)`` index; long ranges come from :class:`CounterDaily`,
which outlives the raw readings.
"""

from __future__ import annotations

import zlib
from datetime import date, datetime
from typing import Any

from django.db.models import QuerySet
from fleetroom_protocol import Reading

from fleetroom.tenancy.models import Tenant
from fleetroom.tenancy.permissions import Permission

from .models import AlertRecord, CounterDaily, CounterValue, Device, DeviceEvent
from .models import Reading as ReadingRow

VIEW = Permission.VIEW_FLEET


def devices(user: Any, *, within: Tenant | None = None) -> QuerySet[Device]:
    """Devices ``user`` may see, optionally only below ``within`` (a dealer, customer, site)."""
    qs = Device.objects.for_user(user, VIEW)
    if within is not None:
        qs = qs.filter(tenant__path__startswith=within.path)
    return qs.select_related("model", "tenant", "location")


def latest_counters(user: Any, device: Device) -> dict[str, CounterValue]:
    """The counters of the device's newest reading, by name (the dashboard's figures)."""
    if device.last_reading_id is None:
        return {}
    rows = CounterValue.objects.for_user(user, VIEW).filter(reading_id=device.last_reading_id)
    return {c.name: c for c in rows}


def counter_series(user: Any, device: Device, name: str, start: datetime,
                   end: datetime) -> QuerySet[CounterValue]:
    """Raw values of one counter in ``[start, end)`` (within the raw retention)."""
    return (CounterValue.objects.for_user(user, VIEW)
            .filter(device=device, name=name, taken_at__gte=start, taken_at__lt=end)
            .order_by("taken_at"))


def daily_counters(user: Any, device: Device, name: str, first: date,
                   last: date) -> QuerySet[CounterDaily]:
    """Per-day first/last value and usage of one counter, ``first``..``last`` inclusive."""
    return (CounterDaily.objects.for_user(user, VIEW)
            .filter(device=device, name=name, day__gte=first, day__lte=last).order_by("day"))


def open_alerts(user: Any, device: Device) -> QuerySet[AlertRecord]:
    """The device's alerts that are open now."""
    return (AlertRecord.objects.for_user(user, VIEW)
            .filter(device=device, closed_at__isnull=True).order_by("opened_at"))


def device_events(user: Any, device: Device) -> QuerySet[DeviceEvent]:
    """What happened to the device, newest first."""
    return (DeviceEvent.objects.for_user(user, VIEW).filter(device=device)
            .order_by("-occurred_at", "-pk"))


def reading_snapshot(user: Any, reading_id: int) -> Reading | None:
    """The reading exactly as it was received, or ``None`` (missing, pruned or out of scope)."""
    row = ReadingRow.objects.for_user(user, VIEW).filter(pk=reading_id).only("payload").first()
    if row is None:
        return None
    return decode_payload(row.payload)


def decode_payload(payload: bytes | memoryview) -> Reading:
    """Inverse of :func:`fleetroom.fleet.services.compress_payload`."""
    return Reading.model_validate_json(zlib.decompress(bytes(payload)))

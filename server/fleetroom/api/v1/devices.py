"""Devices and their readings (permission: ``view_fleet``, read through the tenant scope)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest
from ninja import Path, Query, Router

from fleetroom.accounts.models import User
from fleetroom.core.scoping import get_object_or_404_scoped
from fleetroom.fleet import selectors as fleet
from fleetroom.fleet.models import CounterValue, Device, SupplyLevel, Tag
from fleetroom.fleet.models import Reading as ReadingRow
from fleetroom.tenancy.models import Tenant
from fleetroom.tenancy.permissions import Permission

from ..pagination import paginate
from ..schemas import (
    DeviceDetailOut,
    DeviceFilters,
    DeviceModelOut,
    DeviceOut,
    DevicePage,
    Id,
    PageParams,
    ReadingFilters,
    ReadingOut,
    ReadingPage,
)
from .common import ERRORS, acting_user, alert_out, counter_out, supply_out, tenant_ref

router = Router(tags=["devices"])
VIEW = Permission.VIEW_FLEET

_ORDER: dict[str, tuple[str, ...]] = {"id": ("pk",), "-id": ("-pk",)}
for _key in ("serial", "last_seen", "status", "ip"):
    # The id breaks ties, so pages are stable while many devices share a value.
    _ORDER[_key], _ORDER[f"-{_key}"] = (_key, "pk"), (f"-{_key}", "-pk")

_SEARCH_FIELDS = ("serial", "hostname", "ip", "mac", "sys_name", "asset_number",
                  "manufacturer", "vendor", "model__name")


def _device_rows(user: User) -> QuerySet[Device]:
    """Scoped devices with what a listing shows, in three queries per page."""
    tags = Prefetch("tags", queryset=Tag.objects.for_user(user, VIEW).order_by("name"))
    return fleet.devices(user).prefetch_related(tags)


def device_out(d: Device) -> DeviceOut:
    """A device as listed."""
    return DeviceOut(**_device_fields(d))


def _device_fields(d: Device) -> dict[str, Any]:
    model = None
    if d.model is not None:
        model = DeviceModelOut(manufacturer=d.model.manufacturer, name=d.model.name,
                               is_colour=d.model.is_colour, has_duplex=d.model.has_duplex,
                               marker_technology=d.model.marker_technology)
    return {
        "id": d.pk, "manufacturer": d.manufacturer, "vendor": d.vendor, "model": model,
        "serial": d.serial, "identity_weak": d.identity_weak, "device_kind": d.device_kind,
        "ip": d.ip, "mac": d.mac, "hostname": d.hostname, "firmware": d.firmware,
        "sys_name": d.sys_name, "sys_location": d.sys_location,
        "asset_number": d.asset_number, "cost_centre": d.cost_centre,
        "tags": [t.name for t in d.tags.all()], "tenant": tenant_ref(d.tenant),
        "location": tenant_ref(d.location) if d.location is not None else None,
        "status": d.status, "status_changed_at": d.status_changed_at,
        "first_seen": d.first_seen, "last_seen": d.last_seen,
    }


def _scoped_device(user: User, device_id: int) -> Device:
    return get_object_or_404_scoped(_device_rows(user), user, VIEW, pk=device_id)


@router.get("/devices", response={200: DevicePage, **ERRORS}, operation_id="listDevices",
            summary="List devices")
def list_devices(request: HttpRequest, filters: Query[DeviceFilters],
                 page: Query[PageParams]) -> DevicePage:
    """The devices you may see, filtered and ordered, one page at a time.

    ``tenant`` narrows to a dealer, customer, site or location and everything below
    it; naming a node outside your access answers 404, as if it did not exist.
    """
    user = acting_user(request)
    qs = _device_rows(user)
    if filters.tenant is not None:
        node = get_object_or_404_scoped(Tenant, user, VIEW, pk=filters.tenant)
        qs = qs.filter(Q(tenant__path__startswith=node.path)
                       | Q(location__path__startswith=node.path))
    if filters.q:
        cond = Q()
        for word in filters.q.split():
            any_field = Q()
            for field in _SEARCH_FIELDS:
                any_field |= Q(**{f"{field}__icontains": word})
            cond &= any_field
        qs = qs.filter(cond)
    if filters.status is not None:
        qs = qs.filter(status=filters.status)
    if filters.manufacturer:
        qs = qs.filter(manufacturer__iexact=filters.manufacturer.strip())
    if filters.device_kind is not None:
        qs = qs.filter(device_kind=filters.device_kind)
    qs = qs.order_by(*_ORDER[filters.ordering])
    total, rows = paginate(qs, page)
    return DevicePage(count=total, limit=page.limit, offset=page.offset,
                      items=[device_out(d) for d in rows])


@router.get("/devices/{device_id}", response={200: DeviceDetailOut, **ERRORS},
            operation_id="getDevice", summary="One device with its current state")
def get_device(request: HttpRequest, device_id: Path[Id]) -> DeviceDetailOut:
    """A device's identity, newest counters and supplies, and open alerts."""
    user = acting_user(request)
    d = _scoped_device(user, device_id)
    counters = sorted(fleet.latest_counters(user, d).values(), key=lambda c: c.name)
    supplies: list[SupplyLevel] = []
    if d.last_reading_id is not None:
        supplies = list(SupplyLevel.objects.for_user(user, VIEW)
                        .filter(reading_id=d.last_reading_id).order_by("supply_index", "pk"))
    return DeviceDetailOut(
        **_device_fields(d), device_status=d.device_status, printer_status=d.printer_status,
        error_state_raw=d.error_state_raw, last_reading_id=d.last_reading_id,
        counters=[counter_out(c) for c in counters],
        supplies=[supply_out(s) for s in supplies],
        open_alerts=[alert_out(a) for a in fleet.open_alerts(user, d)])


@router.get("/devices/{device_id}/readings", response={200: ReadingPage, **ERRORS},
            operation_id="listDeviceReadings", summary="A device's readings, newest first")
def list_readings(request: HttpRequest, device_id: Path[Id], filters: Query[ReadingFilters],
                  page: Query[PageParams]) -> ReadingPage:
    """The device's readings with counters and supplies, newest first.

    Only readings reported by a tenant you may see are listed: when a device moved
    from another customer, that customer's history stays theirs.  Raw readings are
    kept for the raw retention period; older usage lives in the daily rollups.
    """
    user = acting_user(request)
    device = _scoped_device(user, device_id)
    qs = ReadingRow.objects.for_user(user, VIEW).filter(device=device)
    if filters.since is not None:
        qs = qs.filter(taken_at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(taken_at__lt=filters.until)
    counters = CounterValue.objects.for_user(user, VIEW).order_by("name", "pk")
    supplies = SupplyLevel.objects.for_user(user, VIEW).order_by("supply_index", "pk")
    qs = (qs.defer("payload").order_by("-taken_at", "-pk")
          .prefetch_related(Prefetch("counter_values", queryset=counters))
          .prefetch_related(Prefetch("supply_levels", queryset=supplies)))
    total, rows = paginate(qs, page)
    items = [ReadingOut(id=r.pk, device_id=r.device_id, taken_at=r.taken_at,
                        received_at=r.received_at, snmp_version=r.snmp_version,
                        profile=r.profile, target=r.target, duration_ms=r.duration_ms,
                        identity_weak=r.identity_weak,
                        counters=[counter_out(c) for c in r.counter_values.all()],
                        supplies=[supply_out(s) for s in r.supply_levels.all()])
             for r in rows]
    return ReadingPage(count=total, limit=page.limit, offset=page.offset, items=items)

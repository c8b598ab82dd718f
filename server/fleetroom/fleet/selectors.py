"""Reads of the fleet app, always through the tenant scope (architecture rule 5).

Every function takes the acting ``user`` and narrows with ``for_user(user,
view_fleet)``: no membership means nothing.  Time series are read by the
``(device, name, taken_at)`` index; long ranges come from :class:`CounterDaily`,
which outlives the raw readings.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.utils import timezone
from fleetroom_protocol import CoarseState, Reading

from fleetroom.core.scoping import restrict
from fleetroom.tenancy.models import Tenant, TenantKind
from fleetroom.tenancy.permissions import Permission

from . import conf
from .identity import normalise_mac
from .models import (
    SUPPLY_ATTENTION_STATES,
    AlertRecord,
    CounterDaily,
    CounterValue,
    Device,
    DeviceEvent,
    DeviceStatus,
    StatusSample,
    SupplyLevel,
    Tag,
)
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


# --- inventory pages (dashboard, device list, export, detail) ------------------------
#
# "Not reporting" is decided here from ``last_seen`` as well as from the stored status:
# the periodic job that stores it runs every ten minutes, and a dashboard must not
# call a device "OK" for those minutes after its threshold passed.  Both use the same
# threshold (``conf.not_reporting_after_hours``).

STATES: tuple[DeviceStatus, ...] = (
    DeviceStatus.OK, DeviceStatus.WARNING, DeviceStatus.ERROR, DeviceStatus.NOT_REPORTING,
    DeviceStatus.UNKNOWN,
)
STATE_RANK: dict[str, int] = {
    DeviceStatus.ERROR: 0, DeviceStatus.WARNING: 1, DeviceStatus.NOT_REPORTING: 2,
    DeviceStatus.UNKNOWN: 3, DeviceStatus.OK: 4,
}
"""Sort order of "state": what needs attention first."""

SORTS: dict[str, tuple[str, ...]] = {
    "state": ("state_rank", "serial"),
    "serial": ("serial",),
    "model": ("model__name", "serial"),
    "hostname": ("hostname",),
    "site": ("tenant__name", "serial"),
    "asset": ("asset_number",),
    "last_seen": ("last_seen",),
}
"""Sortable columns (``?sort=name`` ascending, ``?sort=-name`` descending).  The IP
address is deliberately not sortable: as text, 10.0.0.10 sorts before 10.0.0.9."""
DEFAULT_SORT = "state"
MAX_SEARCH_TERMS = 8


def reporting_cutoff(now: datetime | None = None) -> datetime:
    """A device whose newest reading is older than this is not reporting."""
    return (now or timezone.now()) - timedelta(hours=conf.not_reporting_after_hours())


def state_q(state: str, cutoff: datetime) -> Q:
    """Devices whose effective state is ``state`` (see the note above)."""
    if state == DeviceStatus.NOT_REPORTING:
        return Q(status=DeviceStatus.NOT_REPORTING) | Q(last_seen__lt=cutoff)
    return Q(status=state) & Q(last_seen__gte=cutoff)


def state_counts(user: Any, cutoff: datetime) -> dict[str, int]:
    """Devices in scope per effective state, and ``total``: one aggregate query."""
    agg = Device.objects.for_user(user, VIEW).aggregate(
        total=Count("pk"), **{s.value: Count("pk", filter=state_q(s, cutoff)) for s in STATES})
    return {k: int(v or 0) for k, v in agg.items()}


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """What the device list and the export select: search text, filters and order."""

    q: str = ""
    state: str = ""
    tenant: Tenant | None = None
    """A customer or site: devices in its subtree."""
    manufacturer: str = ""
    supplies: str = ""
    """``"low"``: devices whose newest reading has a supply that needs someone
    (``Device.supplies_attention``)."""
    sort: str = DEFAULT_SORT


def search_q(text: str) -> Q:
    """Every whitespace-separated term must match one of the searchable fields.

    Fields: serial, manufacturer, brand, model, host name, system name, IP, MAC,
    asset number, cost centre, location (ours and the one the device reports) and
    site.  A term that is a MAC address in any spelling also matches its stored
    ``aa:bb:…`` form.
    """
    q = Q()
    for term in text.split()[:MAX_SEARCH_TERMS]:
        one = (Q(serial__icontains=term) | Q(manufacturer__icontains=term)
               | Q(vendor__icontains=term) | Q(model__name__icontains=term)
               | Q(hostname__icontains=term) | Q(sys_name__icontains=term)
               | Q(ip__icontains=term) | Q(mac__icontains=term.replace("-", ":"))
               | Q(asset_number__icontains=term) | Q(cost_centre__icontains=term)
               | Q(location__name__icontains=term) | Q(sys_location__icontains=term)
               | Q(tenant__name__icontains=term))
        mac = normalise_mac(term)
        if mac is not None:
            one |= Q(mac=mac)
        q &= one
    return q


def with_state(qs: QuerySet[Device], cutoff: datetime) -> QuerySet[Device]:
    """``qs`` annotated with the effective ``state`` and its sort rank ``state_rank``."""
    nr = DeviceStatus.NOT_REPORTING
    stale = Q(status=nr) | Q(last_seen__lt=cutoff)
    state = Case(When(stale, then=Value(nr.value)), default=F("status"),
                 output_field=CharField())
    # From the columns, not from ``state``: a CASE over a CASE is evaluated again for
    # every branch, on every row the sort sees.
    rank = Case(When(stale, then=Value(STATE_RANK[nr])),
                *(When(status=s, then=Value(r)) for s, r in STATE_RANK.items() if s != nr),
                default=Value(len(STATE_RANK)), output_field=IntegerField())
    return qs.annotate(state=state, state_rank=rank)


def order_by_for(sort: str) -> tuple[str, ...]:
    """The ``order_by`` of a ``?sort=`` value (unknown values fall back to the default);
    the primary key last, so pages never overlap or skip a row."""
    desc = sort.startswith("-")
    fields = SORTS.get(sort.removeprefix("-")) or SORTS[DEFAULT_SORT]
    if desc:
        return (*(f"-{f}" for f in fields), "-pk")
    return (*fields, "pk")


def device_list(user: Any, query: DeviceQuery, *, cutoff: datetime,
                permissions: tuple[Permission, ...] = (VIEW,)) -> QuerySet[Device]:
    """Devices in the user's scope matching ``query``, in its order, with ``state``.

    ``permissions``: every one must be held on a device's tenant (the export adds
    ``export_data`` to ``view_fleet``).  Joins what a list row shows (model, site and
    its customer, location) so a page is one query whatever its length.
    """
    scoped: QuerySet[Device] = Device.objects.all()
    for perm in permissions:
        scoped = restrict(scoped, user, perm)
    qs = with_state(scoped.select_related("model", "tenant", "tenant__parent", "location"),
                    cutoff)
    if query.q.strip():
        qs = qs.filter(search_q(query.q))
    if query.state in STATE_RANK:
        qs = qs.filter(state_q(query.state, cutoff))
    if query.tenant is not None:
        qs = qs.filter(tenant__path__startswith=query.tenant.path)
    if query.manufacturer:
        qs = qs.filter(manufacturer=query.manufacturer)
    if query.supplies == "low":
        qs = qs.filter(supplies_attention__gt=0)
    return qs.order_by(*order_by_for(query.sort))


def filter_tenants(user: Any) -> list[Tenant]:
    """Customers and sites in scope, for the list's filter: by customer, its sites
    after it (one query)."""
    rows = list(Tenant.objects.for_user(user, VIEW)
                .filter(kind__in=(TenantKind.CUSTOMER, TenantKind.SITE))
                .select_related("parent"))

    def key(t: Tenant) -> tuple[str, str, int]:
        if t.kind == TenantKind.SITE and t.parent is not None:
            return (t.parent.name.casefold(), t.name.casefold(), t.pk)
        return (t.name.casefold(), "", t.pk)

    return sorted(rows, key=key)


def manufacturers(user: Any) -> list[str]:
    """The manufacturers of the devices in scope (as reported), sorted."""
    names = (Device.objects.for_user(user, VIEW).exclude(manufacturer="")
             .order_by().values_list("manufacturer", flat=True).distinct())
    return sorted(names, key=str.casefold)


def low_supplies(user: Any, limit: int) -> tuple[list[SupplyLevel], int]:
    """Supplies that need someone, from each device's newest reading: the worst
    ``limit`` (empty/full first, then by level) and how many there are in all.

    Only devices whose summary says so (``Device.supplies_attention``) have their
    newest reading opened (an index probe each, the expensive part); the matching
    rows' keys are counted and ranked here, and only the ``limit`` shown are then
    loaded with their devices.
    """
    current = (Device.objects.for_user(user, VIEW).filter(supplies_attention__gt=0)
               .values("last_reading_id"))
    keys = list(SupplyLevel.objects.for_user(user, VIEW)
                .filter(reading_id__in=current, state__in=SUPPLY_ATTENTION_STATES)
                .values_list("pk", "state", "level_percent", "device_id"))
    worst = (CoarseState.EMPTY, CoarseState.FULL)
    keys.sort(key=lambda k: (k[1] not in worst, k[2] is None, k[2] or 0.0, k[3], k[0]))
    shown = [k[0] for k in keys[:limit]]
    rows = {s.pk: s for s in SupplyLevel.objects.for_user(user, VIEW).filter(pk__in=shown)
            .select_related("device", "device__model")}
    return [rows[pk] for pk in shown if pk in rows], len(keys)


def recent_alerts(user: Any, limit: int) -> list[AlertRecord]:
    """The most recently raised alerts in scope, open or closed.

    Two steps: the keys come from the ``(tenant, opened_at)`` index alone (newest per
    tenant, no row read), then only the ``limit`` rows shown are loaded with their
    devices.  Selecting whole joined rows in one query made SQLite read every alert
    in scope to sort them.
    """
    ids = list(AlertRecord.objects.for_user(user, VIEW).order_by("-opened_at", "-pk")
               .values_list("pk", flat=True)[:limit])
    rows = {a.pk: a for a in AlertRecord.objects.for_user(user, VIEW).filter(pk__in=ids)
            .select_related("device", "device__model")}
    return [rows[pk] for pk in ids if pk in rows]


def current_supplies(user: Any, device: Device) -> list[SupplyLevel]:
    """The supplies of the device's newest reading."""
    if device.last_reading_id is None:
        return []
    return list(SupplyLevel.objects.for_user(user, VIEW)
                .filter(reading_id=device.last_reading_id)
                .order_by("supply_class", "colour", "supply_index", "pk"))


def status_changes(user: Any, device: Device, limit: int) -> list[StatusSample]:
    """The device's latest status changes, newest first."""
    return list(StatusSample.objects.for_user(user, VIEW).filter(device=device)
                .order_by("-taken_at", "-pk")[:limit])


def device_tags(user: Any, device: Device) -> list[Tag]:
    """The device's tags that belong to tenants in scope (a moved device may still
    carry its old owner's tags; those are not shown)."""
    return list(Tag.objects.for_user(user, VIEW).filter(devices=device).order_by("name"))


def tags_by_device(user: Any, device_ids: list[int]) -> dict[int, list[str]]:
    """Tag names per device for many devices at once (one query; scoped like
    :func:`device_tags`)."""
    out: dict[int, list[str]] = {}
    rows = (Device.tags.through.objects
            .filter(device_id__in=device_ids, tag__in=Tag.objects.for_user(user, VIEW))
            .order_by("tag__name").values_list("device_id", "tag__name"))
    for device_id, name in rows:
        out.setdefault(device_id, []).append(name)
    return out


def counter_names(user: Any, device: Device) -> list[str]:
    """Counters the device has history of: those of its newest reading, else the
    long-term tier's (a device whose raw readings were pruned)."""
    names = set(latest_counters(user, device))
    if not names:
        names = set(CounterDaily.objects.for_user(user, VIEW).filter(device=device)
                    .order_by().values_list("name", flat=True).distinct())
    return sorted(names)


def counter_history(user: Any, device: Device, name: str, start: datetime, end: datetime,
                    *, max_points: int = 400) -> list[tuple[datetime, int]]:
    """(time, value) of one counter in ``[start, end)``, oldest first, at most
    ``max_points``.

    Days the rollup has closed come from :class:`CounterDaily` (one point per day, its
    last value), which outlives the raw readings; the time after the newest rolled day
    from the raw values.  Too many points are thinned to the last one per equal time
    slice, so the newest value is always kept.
    """
    daily = [(at, value) for at, value in
             daily_counters(user, device, name, start.astimezone(UTC).date(),
                            end.astimezone(UTC).date()).values_list("last_at", "last_value")
             if start <= at < end]
    raw_from = daily[-1][0] + timedelta(microseconds=1) if daily else start
    raw = list(counter_series(user, device, name, raw_from, end)
               .values_list("taken_at", "value"))
    points = daily + raw
    if len(points) <= max_points:
        return points
    span = (end - start).total_seconds() or 1.0
    buckets: dict[int, tuple[datetime, int]] = {}
    for at, value in points:
        slot = min(max_points - 1, int((at - start).total_seconds() / span * max_points))
        buckets[slot] = (at, value)
    return [buckets[k] for k in sorted(buckets)]

"""Pieces the v1 endpoint modules share: error responses, the acting user, converters."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from fleetroom.accounts.models import User
from fleetroom.core.views_support import signed_in_user
from fleetroom.fleet.models import AlertRecord, CounterValue, SupplyLevel
from fleetroom.tenancy.models import Tenant

from ..schemas import AlertOut, CounterOut, ErrorOut, SupplyOut, TenantRef

ERRORS: dict[int, Any] = {401: ErrorOut, 404: ErrorOut, 422: ErrorOut, 429: ErrorOut}
"""What a read endpoint may answer besides 200.  A list answers 404 when a filter
names an object outside the caller's access (exactly as if it did not exist)."""


def acting_user(request: HttpRequest) -> User:
    """The token's user (set by :class:`~fleetroom.api.auth.BearerToken`); anything
    else is refused (403), never served as nobody — also under ``python -O``."""
    return signed_in_user(request)


def tenant_ref(t: Tenant) -> TenantRef:
    """A tenant as other objects point at it."""
    return TenantRef(id=t.pk, kind=t.kind, name=t.name)  # type: ignore[arg-type]


def counter_out(c: CounterValue) -> CounterOut:
    """One counter row."""
    return CounterOut(name=c.name, value=c.value, unit=c.unit, width=c.width, delta=c.delta)


def supply_out(s: SupplyLevel) -> SupplyOut:
    """One supply row."""
    return SupplyOut(index=s.supply_index, supply_class=s.supply_class, type=s.supply_type,
                     colour=s.colour, description=s.description, part_number=s.part_number,
                     level_percent=s.level_percent, state=s.state, raw_level=s.raw_level,
                     raw_max=s.raw_max, unit=s.unit)


def alert_out(a: AlertRecord) -> AlertOut:
    """One alert occurrence."""
    return AlertOut(id=a.pk, device_id=a.device_id, source=a.source, severity=a.severity,
                    code=a.code, description=a.description, alert_index=a.alert_index,
                    group=a.group, group_index=a.group_index, location=a.location,
                    training_level=a.training_level, opened_at=a.opened_at,
                    last_seen_at=a.last_seen_at, closed_at=a.closed_at,
                    is_open=a.closed_at is None)

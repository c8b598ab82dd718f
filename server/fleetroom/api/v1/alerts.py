"""Alerts across the fleet (permission: ``view_fleet``, read through the tenant scope)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router

from fleetroom.core.scoping import get_object_or_404_scoped
from fleetroom.fleet.models import AlertRecord, Device
from fleetroom.tenancy.permissions import Permission

from ..pagination import paginate
from ..schemas import AlertFilters, AlertPage, PageParams
from .common import ERRORS, acting_user, alert_out

router = Router(tags=["alerts"])
VIEW = Permission.VIEW_FLEET


@router.get("/alerts", response={200: AlertPage, **ERRORS}, operation_id="listAlerts",
            summary="Open or recent alerts")
def list_alerts(request: HttpRequest, filters: Query[AlertFilters],
                page: Query[PageParams]) -> AlertPage:
    """Alerts of the devices you may see, newest first.

    ``state=open`` (the default) lists what needs attention now; ``state=all`` with
    ``since`` is the recent history.  Naming a device outside your access answers
    404, as if it did not exist.
    """
    user = acting_user(request)
    qs = AlertRecord.objects.for_user(user, VIEW)
    if filters.state == "open":
        qs = qs.filter(closed_at__isnull=True)
    elif filters.state == "closed":
        qs = qs.filter(closed_at__isnull=False)
    if filters.device is not None:
        device = get_object_or_404_scoped(Device, user, VIEW, pk=filters.device)
        qs = qs.filter(device=device)
    if filters.severity is not None:
        qs = qs.filter(severity=filters.severity)
    if filters.since is not None:
        qs = qs.filter(opened_at__gte=filters.since)
    total, rows = paginate(qs.order_by("-opened_at", "-pk"), page)
    return AlertPage(count=total, limit=page.limit, offset=page.offset,
                     items=[alert_out(a) for a in rows])

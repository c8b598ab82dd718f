"""Fleet pages: dashboard, device list and CSV export, device detail and edit.

Rules every view here keeps:

* Login required; tenant data only through the scope (selectors, or
  :func:`~fleetroom.core.scoping.get_object_or_404_scoped`), so an object outside
  it is a 404 exactly like a missing one.  A device the user *can* see but not edit
  answers 403 on the edit page: its existence is no secret to them.
* Server-rendered and complete without JavaScript.  With htmx the same URL answers
  a fragment (``request.htmx`` and the fragment's element as ``HX-Target``), so
  filters, sorting and paging swap only the table; the address bar follows
  (``hx-push-url``) and a history restore gets the full page.
* No inline script or style (CSP): charts and level bars are SVG with presentation
  attributes, coloured by classes from ``app.css``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from fleetroom.core.scoping import get_object_or_404_scoped, has_permission, scope
from fleetroom.core.views_support import (
    HtmxHttpRequest,
    fragment_requested,
    login_required,
    paginate,
    render_fragment_or_page,
    vary_on_htmx,
)
from fleetroom.tenancy.models import Tenant, TenantKind
from fleetroom.tenancy.permissions import Permission

from . import charts, labels, selectors, services
from .forms import DeviceEditForm, DeviceFilterForm
from .models import Device, DeviceEvent, DeviceStatus, EventKind
from .schemas import ExportFilters
from .selectors import DeviceQuery

VIEW = Permission.VIEW_FLEET
PAGE_SIZE = 50
DASHBOARD_ROWS = 10
EVENT_ROWS = 50
STATUS_ROWS = 20
EXPORT_BATCH = 1000
PERIODS: dict[str, tuple[int, Any]] = {
    "7": (7, gettext_lazy("7 days")),
    "30": (30, gettext_lazy("30 days")),
    "90": (90, gettext_lazy("90 days")),
    "365": (365, gettext_lazy("1 year")),
}
DEFAULT_PERIOD = "30"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""Cell openings a spreadsheet may run as a formula (OWASP "CSV injection")."""

RESULTS_TARGET = "device-results"
CHART_TARGET = "counter-chart"


# --- dashboard ---------------------------------------------------------------------


@require_GET
@login_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    """Devices by state (each a link to the filtered list), supplies that need
    someone, recent alerts — all within the user's scope."""
    user = request.user
    cutoff = selectors.reporting_cutoff()
    counts = selectors.state_counts(user, cutoff)
    supplies, supplies_total = selectors.low_supplies(user, DASHBOARD_ROWS)
    alerts = selectors.recent_alerts(user, DASHBOARD_ROWS)
    list_url = reverse("fleet:device_list")
    cards = [{"state": s.value, "label": s.label, "count": counts[s.value],
              "url": f"{list_url}?{urlencode({'state': s.value})}"}
             for s in selectors.STATES
             if s != DeviceStatus.UNKNOWN or counts[s.value]]
    return render(request, "fleet/dashboard.html", {
        "cards": cards, "total": counts["total"],
        "has_scope": not scope(user, VIEW).is_empty,
        "supplies": [_supply_row(s) for s in supplies], "supplies_total": supplies_total,
        "supplies_url": f"{list_url}?{urlencode({'supplies': 'low'})}",
        "alerts": [{"alert": a, "severity": labels.severity(a.severity)} for a in alerts],
    })


def _supply_row(s: Any) -> dict[str, Any]:
    return {"supply": s, "name": labels.supply_name(s.supply_type, s.colour, s.description),
            "state": labels.supply_state(s.state), "bar": charts.level_bar(s.level_percent),
            "receptacle": s.supply_class == "receptacle"}


# --- device list and export ----------------------------------------------------------


COLUMNS: tuple[tuple[str, str | None, Any], ...] = (
    ("state", "state", gettext_lazy("State")),
    ("device", "serial", gettext_lazy("Device")),
    ("model", "model", gettext_lazy("Model")),
    ("address", "hostname", gettext_lazy("Host name / IP")),
    ("site", "site", gettext_lazy("Site")),
    ("asset", "asset", gettext_lazy("Asset number")),
    ("last_seen", "last_seen", gettext_lazy("Last reading")),
)
"""(column, ``?sort=`` key or ``None``, heading) of the device table."""


def _query_params(query: DeviceQuery, **override: Any) -> dict[str, str]:
    params: dict[str, Any] = {
        "q": query.q, "state": query.state,
        "tenant": query.tenant.pk if query.tenant is not None else "",
        "manufacturer": query.manufacturer, "supplies": query.supplies, "sort": query.sort,
    }
    params.update(override)
    return {k: str(v) for k, v in params.items() if v not in ("", None)}


def _url(name: str, params: dict[str, str]) -> str:
    base = reverse(name)
    return f"{base}?{urlencode(params)}" if params else base


def _filtered(request: HttpRequest) -> tuple[DeviceQuery, list[Tenant]]:
    tenants = selectors.filter_tenants(request.user)
    return DeviceFilterForm(request.GET, tenants=tenants).query(), tenants


@require_GET
@login_required
def device_list(request: HtmxHttpRequest) -> HttpResponse:
    """Search, filter, sort and page through the devices in scope.

    A page is a constant number of queries whatever its length (rows join their
    model, site, customer and location; see :func:`selectors.device_list`).
    """
    user = request.user
    cutoff = selectors.reporting_cutoff()
    query, tenants = _filtered(request)
    qs = selectors.device_list(user, query, cutoff=cutoff)
    page = paginate(request, qs, PAGE_SIZE)
    sort = query.sort or selectors.DEFAULT_SORT
    columns = []
    for key, sort_key, heading in COLUMNS:
        col: dict[str, Any] = {"key": key, "heading": heading, "url": None, "aria_sort": None}
        if sort_key is not None:
            current = sort.removeprefix("-") == sort_key
            descending = sort.startswith("-")
            col["url"] = _url("fleet:device_list", _query_params(
                query, sort=f"-{sort_key}" if current and not descending else sort_key))
            if current:
                col["aria_sort"] = "descending" if descending else "ascending"
        columns.append(col)
    pages = {}
    if page.has_previous():
        pages["first"] = _url("fleet:device_list", _query_params(query))
        pages["previous"] = _url("fleet:device_list", _query_params(
            query, page=page.previous_page_number()))
    if page.has_next():
        pages["next"] = _url("fleet:device_list", _query_params(
            query, page=page.next_page_number()))
        pages["last"] = _url("fleet:device_list", _query_params(
            query, page=page.paginator.num_pages))
    # The export link only where the export would answer (not a 403 or 404).
    can_export = (not scope(user, Permission.EXPORT_DATA).is_empty
                  and bool(services.export_chains(user, query.tenant)))
    context = {
        "page": page, "rows": [_list_row(d) for d in page.object_list], "columns": columns,
        "pages": pages, "query": query, "sort": query.sort,
        "export_url": _url("fleet:device_export", _query_params(query)) if can_export else None,
        "tenant_options": [(t.pk, _tenant_option(t)) for t in tenants],
        "manufacturer_options": selectors.manufacturers(user),
        "state_options": [(s.value, s.label) for s in selectors.STATES],
        "results_target": RESULTS_TARGET,
    }
    return render_fragment_or_page(request, context, page="fleet/device_list.html",
                                   fragment="fleet/_device_results.html", target=RESULTS_TARGET)


def _tenant_option(t: Tenant) -> str:
    if t.kind == TenantKind.SITE and t.parent is not None:
        return f"{t.parent.name} › {t.name}"
    return t.name


def state_label(value: str) -> str:
    """The display name of an effective state (the code itself if it is unknown)."""
    return str(_STATE_LABELS.get(value, value))


_STATE_LABELS = dict(DeviceStatus.choices)


def _list_row(d: Any) -> dict[str, Any]:
    return {"device": d, "state": d.state, "state_label": state_label(d.state),
            "customer": _customer_name(d.tenant), "site": _site_name(d.tenant)}


def _customer_name(t: Tenant) -> str:
    if t.kind == TenantKind.SITE and t.parent is not None:
        return t.parent.name
    return t.name


def _site_name(t: Tenant) -> str:
    return t.name if t.kind == TenantKind.SITE else ""


class _Echo:
    """A file-like object whose ``write`` returns what it got (csv → stream)."""

    def write(self, value: str) -> str:
        """Hand the formatted line back to the caller."""
        return value


def csv_cell(value: Any) -> Any:
    """A cell that a spreadsheet shows as text: a leading ``'`` before anything that
    could start a formula (``= + - @``, tab, carriage return)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


EXPORT_FIELDS = ("pk", "serial", "manufacturer", "model__name", "hostname", "ip", "mac",
                 "firmware", "tenant__kind", "tenant__name", "tenant__parent__name",
                 "location__name", "asset_number", "cost_centre", "state", "last_seen")


def _export_header() -> list[str]:
    return [_("ID"), _("Serial number"), _("Manufacturer"), _("Model"), _("Host name"),
            _("IP address"), _("MAC address"), _("Firmware"), _("Customer"), _("Site"),
            _("Location"), _("Asset number"), _("Cost centre"), _("State"),
            _("Last reading (UTC)"), _("Tags")]


def _export_rows(user: Any, batch: list[tuple[Any, ...]]) -> Iterable[list[Any]]:
    tags = selectors.tags_by_device(user, [row[0] for row in batch])
    for (pk, serial, manufacturer, model, hostname, ip, mac, firmware, kind, tenant_name,
         parent_name, location, asset, cost, state, last_seen) in batch:
        site = tenant_name if kind == TenantKind.SITE else ""
        customer = parent_name if kind == TenantKind.SITE else tenant_name
        seen = last_seen.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if last_seen else ""
        yield [pk, serial, manufacturer, model or "", hostname, ip, mac, firmware,
               customer or "", site, location or "", asset, cost,
               state_label(state), seen, ", ".join(tags.get(pk, ()))]


def _export_stream(user: Any, qs: Any) -> Iterator[str]:
    """CSV lines, a batch of devices at a time (their tags one query per batch)."""
    writer = csv.writer(_Echo())
    # The byte-order mark makes spreadsheet programs read UTF-8 (umlauts in names).
    yield "\ufeff" + str(writer.writerow(_export_header()))
    batch: list[tuple[Any, ...]] = []
    for row in qs.values_list(*EXPORT_FIELDS).iterator(chunk_size=EXPORT_BATCH):
        batch.append(row)
        if len(batch) >= EXPORT_BATCH:
            yield "".join(str(writer.writerow([csv_cell(c) for c in r]))
                          for r in _export_rows(user, batch))
            batch = []
    if batch:
        yield "".join(str(writer.writerow([csv_cell(c) for c in r]))
                      for r in _export_rows(user, batch))


@require_GET
@login_required
def device_export(request: HtmxHttpRequest) -> HttpResponseBase:
    """The filtered device list as CSV (streamed), for users with ``export_data``.

    Only devices on which the user holds both ``view_fleet`` and ``export_data``.  The
    audit rows are written before the first byte is sent: an export that breaks off
    is still on record.  A filter on a customer or site outside the export scope is a
    404, like any object outside scope; no ``export_data`` anywhere is a 403 (there is
    no object whose existence it could reveal).
    """
    user = request.user
    if scope(user, Permission.EXPORT_DATA).is_empty:
        raise PermissionDenied(_("You do not have permission to export data."))
    query, _tenants = _filtered(request)
    chains = services.export_chains(user, query.tenant)
    if not chains:
        raise Http404(_("Not found."))
    qs = selectors.device_list(user, query, cutoff=selectors.reporting_cutoff(),
                               permissions=(VIEW, Permission.EXPORT_DATA))
    services.do_audit_export(user, qs, chains=chains, request=request, filters=ExportFilters(
        q=query.q, state=query.state,
        tenant_id=query.tenant.pk if query.tenant is not None else None,
        manufacturer=query.manufacturer, supplies=query.supplies, sort=query.sort))
    response = StreamingHttpResponse(_export_stream(user, qs),
                                     content_type="text/csv; charset=utf-8")
    stamp = timezone.now().astimezone(UTC).strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="fleetroom-devices-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


# --- device detail -------------------------------------------------------------------


def _pick_counter(requested: str | None, names: list[str]) -> str | None:
    if requested in names:
        return requested
    if "total" in names:
        return "total"
    return names[0] if names else None


def _event_rows(user: Any, events: list[DeviceEvent]) -> list[dict[str, Any]]:
    """Events with a one-line explanation; tenant names only for tenants in scope."""
    ids = {v for e in events for k, v in e.details.items()
           if k in ("from_tenant_id", "to_tenant_id") and isinstance(v, int)}
    names = dict(Tenant.objects.for_user(user, VIEW).filter(pk__in=ids)
                 .values_list("pk", "name")) if ids else {}
    elsewhere = _("a tenant outside your access")
    rows = []
    for e in events:
        d = e.details
        text = ""
        if e.kind == EventKind.MOVED:
            text = _("from %(old)s to %(new)s") % {
                "old": names.get(d.get("from_tenant_id"), elsewhere),
                "new": names.get(d.get("to_tenant_id"), elsewhere)}
        elif e.kind in (EventKind.SERIAL_CHANGED, EventKind.IDENTITY_UPGRADED,
                        EventKind.FIRMWARE_CHANGED):
            text = f"{d.get('old') or '–'} → {d.get('new') or '–'}"
        elif e.kind in (EventKind.COUNTER_WRAPPED, EventKind.COUNTER_RESET):
            text = f"{labels.counter(str(d.get('counter', '')))}: " \
                   f"{d.get('old_value')} → {d.get('new_value')}"
        rows.append({"event": e, "text": text})
    return rows


@require_GET
@login_required
def device_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Identity, place, counters with a chart over a chosen period, supplies, open
    alerts and history of one device in scope (404 otherwise)."""
    user = request.user
    cutoff = selectors.reporting_cutoff()
    base = selectors.with_state(
        Device.objects.select_related("model", "tenant", "tenant__parent", "location"), cutoff)
    device = get_object_or_404_scoped(base, user, VIEW, pk=pk)
    counters = selectors.latest_counters(user, device)
    names = sorted(counters) or selectors.counter_names(user, device)
    counter = _pick_counter(request.GET.get("counter"), names)
    period = request.GET.get("period", DEFAULT_PERIOD)
    if period not in PERIODS:
        period = DEFAULT_PERIOD
    end = timezone.now()
    start = end - timedelta(days=PERIODS[period][0])
    history = (selectors.counter_history(user, device, counter, start, end)
               if counter is not None else [])
    detail_url = reverse("fleet:device_detail", args=[device.pk])
    chart_context = {
        "device": device, "chart": charts.line_chart(history, start=start, end=end),
        "counter": counter, "counter_label": labels.counter(counter) if counter else "",
        "period": period, "period_label": PERIODS[period][1],
        "periods": [{"key": k, "label": lbl, "url": f"{detail_url}?" + urlencode(
            {"counter": counter or "", "period": k})} for k, (_days, lbl) in PERIODS.items()],
        "counter_options": [(n, labels.counter(n)) for n in names],
        "chart_target": CHART_TARGET, "detail_url": detail_url,
    }
    if fragment_requested(request, CHART_TARGET):
        return vary_on_htmx(render(request, "fleet/_counter_chart.html", chart_context))
    context = {
        **chart_context,
        "state_label": state_label(device.state),  # type: ignore[attr-defined]
        "customer": _customer_name(device.tenant), "site": _site_name(device.tenant),
        "counters": [{"label": labels.counter(c.name), "value": c} for c in
                     sorted(counters.values(), key=lambda c: c.name)],
        "supplies": [_supply_row(s) for s in selectors.current_supplies(user, device)],
        "alerts": [{"alert": a, "severity": labels.severity(a.severity)}
                   for a in selectors.open_alerts(user, device)],
        "events": _event_rows(user, list(selectors.device_events(user, device)[:EVENT_ROWS])),
        "statuses": selectors.status_changes(user, device, STATUS_ROWS),
        "tags": selectors.device_tags(user, device),
        "can_edit": has_permission(user, Permission.EDIT_DEVICES, device.tenant),
    }
    return vary_on_htmx(render(request, "fleet/device_detail.html", context))


# --- device edit ---------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def device_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Site, location, tags, asset number and cost centre of one device.

    404 for a device outside the view scope; 403 for one the user sees but may not
    edit.  The save goes through :func:`services.do_update_device` (audit row included).
    """
    user = request.user
    device = get_object_or_404_scoped(
        Device.objects.select_related("model", "tenant", "tenant__parent", "location"),
        user, VIEW, pk=pk)
    if not has_permission(user, Permission.EDIT_DEVICES, device.tenant):
        raise PermissionDenied(_("You do not have permission to edit this device."))
    if request.method == "POST":
        form = DeviceEditForm(request.POST, user=user, device=device)
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.do_update_device(
                    device, acting_user=user, tenant=data["tenant"],
                    location=data["location"], tags=data["tags"],
                    asset_number=data["asset_number"], cost_centre=data["cost_centre"],
                    request=request)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, _("The device was saved."))
                return redirect("fleet:device_detail", pk=device.pk)
    else:
        form = DeviceEditForm(user=user, device=device)
    return render(request, "fleet/device_edit.html", {"device": device, "form": form})

"""Fleet pages: dashboard, device list (search, filters, sort, pages, htmx), CSV export,
device detail (chart, supplies, alerts, history) and edit.

Every device here is created from a real protocol ``Reading`` through the ingest
service; expected values are computed in this file from the specs the readings were
built from, never read back from the pages' own output.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation
from fleetroom.accounts.testing import assert_no_inline_code, enable_totp, make_user
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom.fleet.models import CounterDaily, Device, DeviceEvent, Tag
from fleetroom.fleet.services import do_rollup_and_prune, do_update_device, ingest_reading
from fleetroom.tenancy.services import do_create_tenant, do_grant_membership
from fleetroom_protocol import Alert, Counter, Identity, Reading, Status, Supply

pytestmark = pytest.mark.django_db

NOW = timezone.now()
STALE_DAYS = 3
"""Readings this old make a device "not reporting" (the threshold is 24 h)."""


# --- the data -------------------------------------------------------------------------


@dataclass
class Spec:
    """What a device reports, and where its readings go."""

    serial: str
    manufacturer: str
    model: str
    tenant: str
    ip: str
    mac: str
    hostname: str
    device_status: str | None = "running"
    printer_status: str | None = "idle"
    alerts: list[tuple[str, str, str]] = field(default_factory=list)
    """(severity, code, description)"""
    supplies: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(type, colour, raw level, raw capacity) — the agent's rules make the percentage."""
    days_ago: float = 0.05
    total: int = 1000

    def expected_state(self) -> str:
        """RFC 2790 hrDeviceStatus and alert severities, as the summary rules read them."""
        if self.days_ago >= 1:
            return "not_reporting"
        severities = {a[0] for a in self.alerts}
        if "critical" in severities or self.device_status == "down":
            return "error"
        if "warning" in severities or self.device_status == "warning":
            return "warning"
        if self.device_status == "running" or self.printer_status:
            return "ok"
        return "unknown"


SPECS = [
    Spec("KY0001", "Kyocera", "ECOSYS M3145idn", "berlin", "10.1.0.11", "00:17:c8:00:00:01",
         "prn-berlin-1", supplies=[("toner", "black", 45, 100), ("wasteToner", "", 3, 100)]),
    Spec("RC0002", "Ricoh", "IM C3000", "berlin", "10.1.0.12", "00:26:73:00:00:02",
         "mfp-berlin-2", device_status="warning",
         alerts=[("warning", "tonerLow", "Toner low (cyan)")],
         supplies=[("toner", "cyan", 5, 100), ("toner", "black", 80, 100)]),
    Spec("HP0003", "HP", "LaserJet M507", "hamburg", "10.2.0.13", "a0:8c:fd:00:00:03",
         "prn-hamburg-3", device_status="down",
         alerts=[("critical", "jammed", "Paper jam in tray 2")],
         supplies=[("toner", "black", -2, 100)]),
    Spec("KY0004", "Kyocera", "ECOSYS P2040dn", "hamburg", "10.2.0.14", "00:17:c8:00:00:04",
         "prn-hamburg-4", days_ago=STALE_DAYS, supplies=[("toner", "black", 0, 100)]),
    Spec("BR0005", "Brother", "HL-L5100DN", "acme", "10.3.0.15", "00:80:77:00:00:05",
         "brother-5", device_status=None, printer_status=None),
    Spec("IN0006", "Kyocera", "ECOSYS M3145idn", "munich", "10.4.0.16", "00:17:c8:00:00:06",
         "prn-munich-6", supplies=[("toner", "black", 4, 100)]),
    Spec("GX0007", "Kyocera", "ECOSYS M3145idn", "paris", "10.5.0.17", "00:17:c8:00:00:07",
         "prn-paris-7", device_status="down", alerts=[("critical", "doorOpen", "Door open")]),
]
BY_SERIAL = {s.serial: s for s in SPECS}
ACME = {"berlin", "hamburg", "acme"}
DEALER_A = ACME | {"munich"}


def supply_state(level: int, capacity: int, receptacle: bool) -> tuple[float | None, str]:
    """RFC 3805 levels → (percent, coarse state), following the protocol's documented
    rules: a percentage only from a real level and capacity, ≤ 10 % low/almost full."""
    if level < 0:
        return None, "unknown"
    if level == 0:
        return 0.0, "full" if receptacle else "empty"
    pct = round(level * 100.0 / capacity, 1)
    if pct <= 10:
        return pct, "almost-full" if receptacle else "low"
    return pct, "ok"


def reading(spec: Spec, when: datetime, total: int | None = None) -> Reading:
    supplies = []
    for i, (kind, colour, level, capacity) in enumerate(spec.supplies, start=1):
        receptacle = kind.startswith("waste")
        pct, state = supply_state(level, capacity, receptacle)
        supplies.append(Supply(index=i, class_="receptacle" if receptacle else "consumed",
                               type=kind, colour=colour or None, level_percent=pct,
                               state=state, raw_level=level, raw_max=capacity,
                               part_number=f"TK-{i}"))
    return Reading(
        taken_at=when, target=spec.ip, snmp_version="2c",
        identity=Identity(vendor=spec.manufacturer, manufacturer=spec.manufacturer,
                          model=spec.model, serial=spec.serial, mac=spec.mac, ip=spec.ip,
                          hostname=spec.hostname, device_kind="printer"),
        counters=[Counter(name="total", value=spec.total if total is None else total,
                          source="test", width=32)],
        supplies=supplies,
        alerts=[Alert(source="prtAlertTable", severity=sev, code=code, index=i,
                      description=text)
                for i, (sev, code, text) in enumerate(spec.alerts, start=1)],
        status=Status(device_status=spec.device_status, printer_status=spec.printer_status))


@pytest.fixture(autouse=True)
def _fresh_cache():
    """allauth's rate limits live in the cache; a request to a /de/ page leaves German
    active in this thread (and reverse() would then give /de/ URLs)."""
    cache.clear()
    yield
    cache.clear()
    translation.activate(settings.LANGUAGE_CODE)


@pytest.fixture
def world():
    return build_world()


def build_world():
    """The tenant tree, the devices of :data:`SPECS` (one reading each, through ingest)
    and one user per role; returns ``(tenants, devices by serial, users)``."""
    t = {}

    def add(key, parent, kind, name):
        t[key] = do_create_tenant(t.get(parent), kind, name, SYSTEM)

    add("op", None, "operator", "Platform")
    add("dealer_a", "op", "dealer", "Dealer A")
    add("acme", "dealer_a", "customer", "Acme")
    add("berlin", "acme", "site", "Berlin")
    add("floor2", "berlin", "location", "Floor 2")
    add("hamburg", "acme", "site", "Hamburg")
    add("initech", "dealer_a", "customer", "Initech")
    add("munich", "initech", "site", "Munich")
    add("dealer_b", "op", "dealer", "Dealer B")
    add("globex", "dealer_b", "customer", "Globex")
    add("paris", "globex", "site", "Paris")

    devices = {}
    for spec in SPECS:
        result = ingest_reading(reading(spec, NOW - timedelta(days=spec.days_ago)),
                                tenant=t[spec.tenant])
        assert result.outcome == "stored", result
        devices[spec.serial] = Device.objects.get(pk=result.device_id)

    u = {}

    def member(key, tenant, role, *, mfa=False, **kw):
        u[key] = make_user(key)
        do_grant_membership(u[key], t[tenant], role=role, acting_user=SYSTEM, **kw)
        if mfa:
            enable_totp(u[key])

    member("dealer", "dealer_a", "dealer_admin", mfa=True)
    member("tech", "dealer_a", "dealer_technician", mfa=True)
    member("acme_admin", "acme", "customer_admin")
    member("acme_viewer", "acme", "customer_viewer")
    member("berlin_viewer", "acme", "customer_viewer", sites=[t["berlin"]])
    u["nobody"] = make_user("nobody")
    return t, devices, u


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def serials_in_scope(tenant_keys: set[str]) -> set[str]:
    return {s.serial for s in SPECS if s.tenant in tenant_keys}


ROW_LINK = re.compile(r'<td><a href="/fleet/devices/(\d+)/">([^<]+)</a>')


def listed(response) -> list[str]:
    """Serials in the device table, in page order."""
    assert response.status_code == 200, response.status_code
    return [m.group(2) for m in ROW_LINK.finditer(response.text)]


# --- login, scope and permissions on every route --------------------------------------


def routes(devices):
    pk = devices["KY0001"].pk
    return [reverse("fleet:dashboard"), reverse("fleet:device_list"),
            reverse("fleet:device_export"), reverse("fleet:device_detail", args=[pk]),
            reverse("fleet:device_edit", args=[pk])]


def test_every_route_needs_a_login(world):
    _, devices, _ = world
    for url in routes(devices):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("account_login")), url
        htmx = Client().get(url, headers={"HX-Request": "true"})
        assert htmx.status_code == 200
        assert htmx["HX-Redirect"].startswith(reverse("account_login"))


@pytest.mark.parametrize(("who", "visible"), [
    ("dealer", DEALER_A), ("tech", DEALER_A), ("acme_admin", ACME), ("acme_viewer", ACME),
    ("berlin_viewer", {"berlin"}), ("nobody", set()),
])
def test_detail_in_scope_and_404_outside(world, who, visible):
    _, devices, u = world
    c = client_for(u[who])
    for serial, device in devices.items():
        response = c.get(reverse("fleet:device_detail", args=[device.pk]))
        if BY_SERIAL[serial].tenant in visible:
            assert response.status_code == 200, serial
            assert serial in response.text
        else:
            assert response.status_code == 404, serial
    assert c.get(reverse("fleet:device_detail", args=[999_999])).status_code == 404


@pytest.mark.parametrize(("who", "visible"), [
    ("dealer", DEALER_A), ("acme_admin", ACME), ("berlin_viewer", {"berlin"}),
    ("nobody", set()),
])
def test_list_shows_exactly_the_scope(world, who, visible):
    _, _, u = world
    assert set(listed(client_for(u[who]).get(reverse("fleet:device_list")))) == \
        serials_in_scope(visible)


def test_edit_is_404_outside_scope_and_403_without_the_permission(world):
    _, devices, u = world
    acme_admin = client_for(u["acme_admin"])
    for serial in ("IN0006", "GX0007"):  # sibling customer, other dealer
        url = reverse("fleet:device_edit", args=[devices[serial].pk])
        assert acme_admin.get(url).status_code == 404
        assert acme_admin.post(url, {"tenant": ""}).status_code == 404
    own = reverse("fleet:device_edit", args=[devices["KY0001"].pk])
    assert acme_admin.get(own).status_code == 200
    viewer = client_for(u["acme_viewer"])
    assert viewer.get(own).status_code == 403  # sees the device, may not edit it
    assert viewer.post(own, {"tenant": ""}).status_code == 403
    berlin = client_for(u["berlin_viewer"])
    assert berlin.get(reverse("fleet:device_edit", args=[devices["HP0003"].pk])
                      ).status_code == 404


def test_pages_have_no_inline_code_and_work_in_german(world):
    _, devices, u = world
    c = client_for(u["dealer"])
    pk = devices["RC0002"].pk
    for url in (reverse("fleet:dashboard"), reverse("fleet:device_list"),
                reverse("fleet:device_detail", args=[pk]),
                reverse("fleet:device_edit", args=[pk])):
        response = c.get(url)
        assert response.status_code == 200, url
        assert_no_inline_code(response.text)
        german = c.get("/de" + url)
        assert german.status_code == 200, url
        assert '<html lang="de">' in german.text


# --- dashboard --------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "visible"), [
    ("dealer", DEALER_A), ("acme_admin", ACME), ("berlin_viewer", {"berlin"}),
])
def test_dashboard_counts_states_in_scope_and_links_to_the_list(world, who, visible):
    _, _, u = world
    c = client_for(u[who])
    html = c.get(reverse("fleet:dashboard")).text
    specs = [s for s in SPECS if s.tenant in visible]
    for state in ("ok", "warning", "error", "not_reporting"):
        expected = sum(1 for s in specs if s.expected_state() == state)
        link = f'href="/fleet/devices/?state={state}"'
        card = re.search(rf'{re.escape(link)}>\s*<span class="value">(\d+)</span>', html)
        assert card is not None, state
        assert int(card.group(1)) == expected, state
        # ... and the link leads to exactly those devices.
        assert sorted(listed(c.get(f"/fleet/devices/?state={state}"))) == sorted(
            s.serial for s in specs if s.expected_state() == state)


def test_dashboard_lists_supplies_that_need_attention_and_recent_alerts(world):
    _, _, u = world
    html = client_for(u["acme_admin"]).get(reverse("fleet:dashboard")).text
    needing = set()
    for s in SPECS:
        for kind, _colour, level, cap in s.supplies:
            _pct, state = supply_state(level, cap, kind.startswith("waste"))
            if state in ("low", "empty", "almost-full", "full"):
                needing.add(s.serial)
    section = html.split('id="supplies-heading"')[1].split('id="alerts-heading"')[0]
    shown = {serial for serial in BY_SERIAL if serial in section}
    assert shown == {s for s in needing if BY_SERIAL[s].tenant in ACME}
    alerts = html.split('id="alerts-heading"')[1]
    for s in SPECS:
        for _sev, _code, text in s.alerts:
            assert (text in alerts) == (s.tenant in ACME), text


def test_dashboard_for_a_user_without_access(world):
    _, _, u = world
    response = client_for(u["nobody"]).get(reverse("fleet:dashboard"))
    assert response.status_code == 200
    assert "You do not have access to any fleet yet." in response.text
    assert not any(serial in response.text for serial in BY_SERIAL)


# --- device list: search, filters, sort, pages, htmx ----------------------------------


def devices_of(visible: set[str], predicate) -> set[str]:
    return {s.serial for s in SPECS if s.tenant in visible and predicate(s)}


@pytest.mark.parametrize(("q", "predicate"), [
    ("KY00", lambda s: "KY00" in s.serial),
    ("m3145", lambda s: "m3145" in s.model.lower()),
    ("berlin", lambda s: "berlin" in s.hostname),  # host names, and the site Berlin
    ("10.2.0", lambda s: s.ip.startswith("10.2.0.")),
    ("00-26-73-00-00-02", lambda s: s.mac == "00:26:73:00:00:02"),  # another MAC spelling
    ("002673000002", lambda s: s.mac == "00:26:73:00:00:02"),
    ("kyocera hamburg", lambda s: s.manufacturer == "Kyocera" and s.tenant == "hamburg"),
    ("nothing-like-this", lambda s: False),
])
def test_search(world, q, predicate):
    _, _, u = world
    c = client_for(u["dealer"])
    got = set(listed(c.get(reverse("fleet:device_list"), {"q": q})))
    expected = devices_of(DEALER_A, predicate)
    if q == "berlin":
        expected |= devices_of(DEALER_A, lambda s: s.tenant == "berlin")
    assert got == expected


def test_search_by_asset_number_and_location(world):
    t, devices, u = world
    do_update_device(devices["RC0002"], acting_user=SYSTEM, tenant=t["berlin"],
                     location=t["floor2"], tags=["colour"], asset_number="INV-4711",
                     cost_centre="CC-9")
    c = client_for(u["acme_admin"])
    assert listed(c.get(reverse("fleet:device_list"), {"q": "inv-4711"})) == ["RC0002"]
    assert listed(c.get(reverse("fleet:device_list"), {"q": "floor 2"})) == ["RC0002"]


def test_filters(world):
    t, _, u = world
    c = client_for(u["dealer"])
    url = reverse("fleet:device_list")
    assert set(listed(c.get(url, {"manufacturer": "Kyocera"}))) == devices_of(
        DEALER_A, lambda s: s.manufacturer == "Kyocera")
    assert set(listed(c.get(url, {"tenant": t["berlin"].pk}))) == devices_of(
        DEALER_A, lambda s: s.tenant == "berlin")
    assert set(listed(c.get(url, {"tenant": t["acme"].pk}))) == serials_in_scope(ACME)
    assert set(listed(c.get(url, {"tenant": t["acme"].pk, "state": "error"}))) == devices_of(
        ACME, lambda s: s.expected_state() == "error")
    low = devices_of(DEALER_A, lambda s: any(
        supply_state(lv, cap, k.startswith("waste"))[1] in ("low", "empty", "almost-full",
                                                           "full")
        for k, _c, lv, cap in s.supplies))
    assert set(listed(c.get(url, {"supplies": "low"}))) == low


def test_supply_filter_follows_the_newest_reading(world):
    t, _, u = world
    c = client_for(u["acme_admin"])
    url = reverse("fleet:device_list")
    assert "RC0002" in listed(c.get(url, {"supplies": "low"}))  # cyan at 5 %
    spec = BY_SERIAL["RC0002"]
    refilled = Spec(**{**spec.__dict__, "supplies": [("toner", "cyan", 100, 100),
                                                      ("toner", "black", 80, 100)]})
    ingest_reading(reading(refilled, NOW - timedelta(minutes=1)), tenant=t["berlin"])
    assert "RC0002" not in listed(c.get(url, {"supplies": "low"}))
    html = c.get(reverse("fleet:dashboard")).text
    section = html.split('id="supplies-heading"')[1].split('id="alerts-heading"')[0]
    assert "RC0002" not in section


def test_export_link_only_where_the_export_answers(world):
    t, _, u = world
    url = reverse("fleet:device_list")
    admin = client_for(u["acme_admin"])
    page = admin.get(url, {"tenant": t["berlin"].pk, "q": "prn"}).text
    export = re.search(r'href="(/fleet/devices/export\.csv[^"]*)"', page).group(1)
    rows = export_rows(admin.get(export.replace("&amp;", "&")))
    assert {r["Serial number"] for r in rows} == devices_of(
        ACME, lambda s: s.tenant == "berlin" and "prn" in s.hostname)
    assert "Export CSV" not in client_for(u["acme_viewer"]).get(url).text
    assert "Export CSV" not in client_for(u["tech"]).get(url).text


def test_filter_on_a_tenant_outside_scope_is_404(world):
    t, _, u = world
    c = client_for(u["acme_admin"])
    for key in ("munich", "initech", "paris", "dealer_a"):
        assert c.get(reverse("fleet:device_list"), {"tenant": t[key].pk}).status_code == 404
    assert c.get(reverse("fleet:device_list"), {"tenant": "x"}).status_code == 404
    # Values that reveal nothing are ignored, not errors.
    bogus = c.get(reverse("fleet:device_list"), {"state": "bogus", "sort": "bogus"})
    assert set(listed(bogus)) == serials_in_scope(ACME)
    assert '<th scope="col" aria-sort="ascending" class="col-state">' in bogus.text
    long = c.get(reverse("fleet:device_list"), {"q": "KY0001" + " " * 300 + "x"})
    assert listed(long) == ["KY0001"]  # cut at 200 characters, not refused


def test_sort(world):
    _, _, u = world
    c = client_for(u["dealer"])
    url = reverse("fleet:device_list")
    specs = [s for s in SPECS if s.tenant in DEALER_A]
    assert listed(c.get(url, {"sort": "serial"})) == sorted(s.serial for s in specs)
    assert listed(c.get(url, {"sort": "-serial"})) == sorted(
        (s.serial for s in specs), reverse=True)
    by_host = [s.serial for s in sorted(specs, key=lambda s: s.hostname)]
    assert listed(c.get(url, {"sort": "hostname"})) == by_host
    rank = {"error": 0, "warning": 1, "not_reporting": 2, "unknown": 3, "ok": 4}
    got = listed(c.get(url, {"sort": "state"}))
    assert [rank[BY_SERIAL[s].expected_state()] for s in got] == sorted(
        rank[s.expected_state()] for s in specs)
    # The header link of the current column flips the direction.
    html = c.get(url, {"sort": "serial"}).text
    assert 'aria-sort="ascending"' in html
    assert "sort=-serial" in html


def _more_devices(site, n: int) -> set[str]:
    serials = set()
    for i in range(n):
        spec = Spec(f"ZZ{i:04d}", "Lexmark", "MS621", "x", f"10.9.{i // 200}.{i % 200 + 1}",
                    f"00:21:b7:00:{i // 256:02x}:{i % 256:02x}", f"lex-{i}")
        assert ingest_reading(reading(spec, NOW - timedelta(hours=1)),
                              tenant=site).outcome == "stored"
        serials.add(spec.serial)
    return serials


def test_pagination_covers_every_device_once(world):
    t, _, u = world
    extra = _more_devices(t["hamburg"], 53)
    expected = serials_in_scope(ACME) | extra
    c = client_for(u["acme_admin"])
    url = reverse("fleet:device_list")
    first = listed(c.get(url, {"sort": "serial"}))
    second_page = c.get(url, {"sort": "serial", "page": 2})
    second = listed(second_page)
    assert len(first) == 50
    assert len(second) == len(expected) - 50
    assert first + second == sorted(expected)
    assert f"of {len(expected)}" in second_page.text
    assert listed(c.get(url, {"sort": "serial", "page": 99})) == second  # clamps to the last


def test_list_query_count_does_not_grow_with_the_fleet(world, django_assert_max_num_queries):
    t, _, u = world
    c = client_for(u["dealer"])
    url = reverse("fleet:device_list")
    c.get(url)  # warm-up (session, first-use caches)
    with CaptureQueriesContext(connection) as small:
        assert c.get(url, {"q": "10."}).status_code == 200
    _more_devices(t["munich"], 60)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = c.get(url, {"q": "10."})
    assert len(listed(response)) == 50
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert len(listed(c.get(url, {"sort": "site"}))) == 50
    assert len(small.captured_queries) <= 16


def test_htmx_gets_the_table_fragment_and_history_restore_the_page(world):
    _, _, u = world
    c = client_for(u["acme_admin"])
    url = reverse("fleet:device_list")
    fragment = c.get(url, {"state": "error"},
                     headers={"HX-Request": "true", "HX-Target": "device-results"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert set(listed(fragment)) == devices_of(ACME, lambda s: s.expected_state() == "error")
    assert 'name="sort"' in fragment.text
    assert 'form="device-filters"' in fragment.text
    assert "HX-Request" in fragment["Vary"]
    restore = c.get(url, headers={"HX-Request": "true", "HX-Target": "device-results",
                                  "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text
    assert "<html" in c.get(url).text


# --- CSV export -----------------------------------------------------------------------


def export_rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


def test_export_contains_the_filtered_list_and_is_audited(world):
    t, _, u = world
    c = client_for(u["acme_admin"])
    before = AuditEvent.objects.filter(action="device.exported").count()
    rows = export_rows(c.get(reverse("fleet:device_export"), {"manufacturer": "Kyocera"}))
    expected = devices_of(ACME, lambda s: s.manufacturer == "Kyocera")
    assert {r["Serial number"] for r in rows} == expected
    for r in rows:
        spec = BY_SERIAL[r["Serial number"]]
        assert (r["IP address"], r["MAC address"], r["Host name"]) == (
            spec.ip, spec.mac, spec.hostname)
        assert r["Customer"] == "Acme"
        assert r["Site"] == t[spec.tenant].name
    events = AuditEvent.objects.filter(action="device.exported").order_by("pk")
    assert events.count() == before + 1
    ev = events.last()
    assert ev.actor_id == u["acme_admin"].pk
    assert ev.tenant_id == t["acme"].pk
    assert ev.data["rows"] == len(expected)
    assert ev.data["filters"]["manufacturer"] == "Kyocera"


def test_export_by_a_dealer_is_audited_on_the_dealer_chain(world):
    t, _, u = world
    rows = export_rows(client_for(u["dealer"]).get(reverse("fleet:device_export")))
    assert {r["Serial number"] for r in rows} == serials_in_scope(DEALER_A)
    ev = AuditEvent.objects.filter(action="device.exported").get()
    assert (ev.tenant_id, ev.data["rows"]) == (t["dealer_a"].pk, len(rows))


def test_export_neutralises_formulas(world):
    t, devices, u = world
    do_update_device(devices["KY0001"], acting_user=SYSTEM, tenant=t["berlin"], location=None,
                     tags=["@SUM(A1)", "plain"], asset_number='=HYPERLINK("http://x","y")',
                     cost_centre="+41")
    hostile = BY_SERIAL["HP0003"]
    ingest_reading(reading(Spec(**{**hostile.__dict__, "hostname": "-2+3"}),
                           NOW - timedelta(minutes=1)), tenant=t["hamburg"])
    rows = {r["Serial number"]: r for r in export_rows(
        client_for(u["acme_admin"]).get(reverse("fleet:device_export")))}
    k1 = rows["KY0001"]
    assert k1["Asset number"] == "'" + '=HYPERLINK("http://x","y")'
    assert k1["Cost centre"] == "'+41"
    assert k1["Tags"] == "'@SUM(A1), plain"
    assert rows["HP0003"]["Host name"] == "'-2+3"
    for row in rows.values():
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value


def test_export_needs_the_permission_and_a_tenant_in_scope(world):
    t, _, u = world
    url = reverse("fleet:device_export")
    for who in ("acme_viewer", "tech", "nobody"):  # no export_data
        assert client_for(u[who]).get(url).status_code == 403, who
    acme_admin = client_for(u["acme_admin"])
    for key in ("munich", "paris", "dealer_a"):
        assert acme_admin.get(url, {"tenant": t[key].pk}).status_code == 404, key
    assert not AuditEvent.objects.filter(action="device.exported").exists()


def test_export_query_count_is_per_batch_not_per_device(world, django_assert_max_num_queries):
    t, _, u = world
    _more_devices(t["berlin"], 40)
    c = client_for(u["acme_admin"])
    c.get(reverse("fleet:dashboard"))
    with django_assert_max_num_queries(20):
        rows = export_rows(c.get(reverse("fleet:device_export")))
    assert len(rows) == len(serials_in_scope(ACME)) + 40


# --- device detail ---------------------------------------------------------------------


def test_detail_shows_identity_supplies_alerts(world):
    _, devices, u = world
    c = client_for(u["acme_admin"])
    for serial in ("KY0001", "RC0002", "HP0003"):
        spec = BY_SERIAL[serial]
        html = c.get(reverse("fleet:device_detail", args=[devices[serial].pk])).text
        for value in (spec.serial, spec.model, spec.ip, spec.mac, spec.hostname):
            assert value in html
        for kind, _colour, level, cap in spec.supplies:
            pct, _state = supply_state(level, cap, kind.startswith("waste"))
            if pct is None:  # no percentage: the honest state, no bar
                assert "Level not reported" in html
            else:
                assert f'width="{min(100.0, pct):.1f}" height="8"' in html
        for _sev, _code, text in spec.alerts:
            assert text in html
    waste = c.get(reverse("fleet:device_detail", args=[devices["KY0001"].pk])).text
    assert "3 % free" in waste  # a receptacle's level is its free space


def test_detail_chart_has_the_points_of_the_counter_history(world):
    t, devices, u = world
    spec = BY_SERIAL["KY0001"]
    midnight = NOW.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    history = []
    value = 5000
    for day in range(12, 0, -1):  # two readings a day for twelve days
        for hour in (6, 18):
            value += 37 * day + hour
            history.append((midnight - timedelta(days=day) + timedelta(hours=hour), value))
    for when, v in history:
        ingest_reading(reading(spec, when, total=v), tenant=t["berlin"])
    report = do_rollup_and_prune(now=NOW)  # rolls every UTC day before today
    assert report.finished
    assert CounterDaily.objects.filter(device=devices["KY0001"]).exists()
    # Expected: for each past UTC day its last value (the long-term tier), then the
    # raw values of today; the fixture's own reading is one of them (or yesterday's).
    per_day: dict = {}
    raw = []
    for when, v in sorted([*history, (NOW - timedelta(days=spec.days_ago), spec.total)]):
        if when < midnight:
            per_day[when.astimezone(UTC).date()] = (when, v)
        else:
            raw.append((when, v))
    expected = [per_day[d] for d in sorted(per_day)] + raw
    c = client_for(u["acme_admin"])
    html = c.get(reverse("fleet:device_detail", args=[devices["KY0001"].pk]),
                 {"counter": "total", "period": "30"}).text
    svg = html.split('<svg class="chart"')[1].split("</svg>")[0]
    points = [(int(v), float(cy)) for cy, v in
              re.findall(r'<circle class="pt" cx="[\d.]+" cy="([\d.]+)" r="2.5" '
                         r'data-value="(\d+)"', svg)]
    assert [v for v, _ in points] == [v for _, v in expected]
    # Higher values are drawn higher (smaller y), equal values at the same height.
    for (v1, y1), (v2, y2) in itertools.pairwise(points):
        assert (v2 > v1) == (y2 < y1)
        assert (v2 == v1) == (y2 == y1)
    polyline = re.search(r'<polyline class="line" points="([^"]+)"', svg).group(1)
    assert len(polyline.split()) == len(expected)
    # A 7-day period keeps only the points inside it.
    week = c.get(reverse("fleet:device_detail", args=[devices["KY0001"].pk]),
                 {"counter": "total", "period": "7"}).text
    values = [int(v) for v in re.findall(r'data-value="(\d+)"', week)]
    cutoff = NOW - timedelta(days=7)
    assert values == [v for w, v in expected if w >= cutoff]


def test_chart_fragment_for_htmx(world):
    _, devices, u = world
    response = client_for(u["acme_admin"]).get(
        reverse("fleet:device_detail", args=[devices["KY0001"].pk]), {"period": "7"},
        headers={"HX-Request": "true", "HX-Target": "counter-chart"})
    assert "<html" not in response.text
    assert f'data-value="{BY_SERIAL["KY0001"].total}"' in response.text


def test_detail_history_names_only_tenants_in_scope(world):
    t, devices, u = world
    # Globex's device is resold to Acme Hamburg: the move event names Globex's site.
    # (Another dealer's customer: the operator moves it, then Hamburg's agent reads it.)
    spec = BY_SERIAL["GX0007"]
    device = devices["GX0007"]
    do_update_device(device, acting_user=SYSTEM, tenant=t["hamburg"], location=None, tags=[],
                     asset_number="", cost_centre="")
    assert ingest_reading(reading(spec, NOW - timedelta(minutes=5)),
                          tenant=t["hamburg"]).outcome == "stored"
    html = client_for(u["acme_admin"]).get(reverse("fleet:device_detail",
                                                   args=[device.pk])).text
    assert "Moved to another tenant" in html
    assert "from a tenant outside your access to Hamburg" in html
    assert "Paris" not in html
    dealer_a_view = client_for(u["dealer"]).get(reverse("fleet:device_detail",
                                                        args=[device.pk]))
    assert dealer_a_view.status_code == 200  # Dealer A's customer owns it now


def test_detail_query_count_is_bounded(world, django_assert_max_num_queries):
    _, devices, u = world
    c = client_for(u["acme_admin"])
    url = reverse("fleet:device_detail", args=[devices["RC0002"].pk])
    c.get(url)
    with django_assert_max_num_queries(20):
        assert c.get(url).status_code == 200


def test_dashboard_query_count_is_bounded(world, django_assert_max_num_queries):
    t, _, u = world
    _more_devices(t["berlin"], 30)
    c = client_for(u["dealer"])
    c.get(reverse("fleet:dashboard"))
    with django_assert_max_num_queries(14):
        assert c.get(reverse("fleet:dashboard")).status_code == 200


# --- device edit -------------------------------------------------------------------------


def test_edit_saves_writes_an_event_and_an_audit_row(world):
    t, devices, u = world
    device = devices["KY0001"]
    c = client_for(u["acme_admin"])
    url = reverse("fleet:device_edit", args=[device.pk])
    form = c.get(url).text
    assert f'<option value="{t["munich"].pk}"' not in form  # only sites in scope
    assert f'<option value="{t["hamburg"].pk}"' in form
    response = c.post(url, {"tenant": t["hamburg"].pk, "location": "",
                            "tags": "Colour, floor 3, colour", "asset_number": " A-100 ",
                            "cost_centre": "4711"})
    assert response.status_code == 302
    assert response["Location"] == reverse("fleet:device_detail", args=[device.pk])
    device.refresh_from_db()
    assert device.tenant_id == t["hamburg"].pk
    assert (device.asset_number, device.cost_centre) == ("A-100", "4711")
    assert sorted(device.tags.values_list("name", flat=True)) == ["Colour", "floor 3"]
    assert set(Tag.objects.filter(devices=device).values_list("tenant_id", flat=True)) == {
        t["hamburg"].pk}
    ev = DeviceEvent.objects.get(device=device, kind="moved")
    assert ev.details == {"from_tenant_id": t["berlin"].pk, "to_tenant_id": t["hamburg"].pk}
    audit = AuditEvent.objects.get(action="device.updated", target_id=str(device.pk))
    assert audit.actor_id == u["acme_admin"].pk
    assert audit.data["changes"]["asset_number"] == {"old": None, "new": "A-100"}
    assert audit.data["changes"]["tenant"]["new"] == f"Hamburg (#{t['hamburg'].pk})"
    # Saving the same values again changes nothing and writes no second row.
    c.post(url, {"tenant": t["hamburg"].pk, "location": "", "tags": "colour, Floor 3",
                 "asset_number": "A-100", "cost_centre": "4711"})
    assert AuditEvent.objects.filter(action="device.updated").count() == 1


def test_edit_refuses_sites_and_locations_outside_scope_or_site(world):
    t, devices, u = world
    device = devices["KY0001"]
    c = client_for(u["acme_admin"])
    url = reverse("fleet:device_edit", args=[device.pk])
    for data in ({"tenant": t["munich"].pk}, {"tenant": t["paris"].pk},
                 {"tenant": t["hamburg"].pk, "location": t["floor2"].pk},
                 {"tenant": t["berlin"].pk, "tags": "x" * 65}):
        response = c.post(url, {"location": "", "tags": "", "asset_number": "",
                                "cost_centre": "", **data})
        assert response.status_code == 200, data  # the form again, with an error
        assert 'class="errors"' in response.text
    device.refresh_from_db()
    assert device.tenant_id == t["berlin"].pk
    assert not AuditEvent.objects.filter(action="device.updated").exists()
    ok = c.post(url, {"tenant": t["berlin"].pk, "location": t["floor2"].pk, "tags": "",
                      "asset_number": "", "cost_centre": ""})
    assert ok.status_code == 302
    device.refresh_from_db()
    assert device.location_id == t["floor2"].pk


def test_edit_needs_csrf(world):
    t, devices, u = world
    c = Client(enforce_csrf_checks=True)
    c.force_login(u["acme_admin"])
    url = reverse("fleet:device_edit", args=[devices["KY0001"].pk])
    data = {"tenant": t["hamburg"].pk, "location": "", "tags": "", "asset_number": "X",
            "cost_centre": ""}
    assert c.post(url, data).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', c.get(url).text).group(1)
    assert c.post(url, {**data, "csrfmiddlewaretoken": token}).status_code == 302


def test_a_customer_wide_agent_does_not_undo_a_site_placement(world):
    t, devices, u = world
    spec = BY_SERIAL["BR0005"]  # reported by Acme's customer-level agent
    device = devices["BR0005"]
    client_for(u["acme_admin"]).post(
        reverse("fleet:device_edit", args=[device.pk]),
        {"tenant": t["berlin"].pk, "location": "", "tags": "", "asset_number": "",
         "cost_centre": ""})
    ingest_reading(reading(spec, NOW - timedelta(minutes=1)), tenant=t["acme"])
    device.refresh_from_db()
    assert device.tenant_id == t["berlin"].pk
    # An agent of another site still wins: the reporting tenant decides.
    ingest_reading(reading(spec, NOW), tenant=t["hamburg"])
    device.refresh_from_db()
    assert device.tenant_id == t["hamburg"].pk

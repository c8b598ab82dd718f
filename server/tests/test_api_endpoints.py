"""The read endpoints: pagination, filters, ordering, readings newest first with their
counters and supplies, alerts, sites; the JSON error shape for 400/401/404/422/429/500;
the API root, the OpenAPI document and the Swagger page under our CSP.  Expected values
come from the readings built in ``test_api_support``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from fleetroom.accounts.testing import assert_no_inline_code
from fleetroom.core.middleware import CSP

from server.tests.test_api_support import JAMMED, T0, TONER_LOW, build_world, get, issue

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world():
    return build_world()


@pytest.fixture
def client():
    return Client()


@pytest.fixture
def op(world):
    """A token that sees the whole platform."""
    return issue(world.users["op_admin"])


def iso(dt) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


# --- pagination -------------------------------------------------------------------------

def test_limit_offset_and_total(world, client, op):
    all_ids = sorted(world.devices.values())
    pages = []
    for offset in (0, 2, 4):
        body = get(client, "/api/v1/devices", op, limit=2, offset=offset).json()
        assert body["count"] == 4
        assert (body["limit"], body["offset"]) == (2, offset)
        pages.append([d["id"] for d in body["items"]])
    assert pages == [all_ids[:2], all_ids[2:], []]
    default = get(client, "/api/v1/devices", op).json()
    assert default["limit"] == 50
    assert len(default["items"]) == 4


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"offset": -1},
                                    {"limit": "ten"}])
def test_bad_paging_is_a_422(client, op, params):
    body = assert_error(get(client, "/api/v1/devices", op, **params), 422, "validation_error")
    assert body["errors"]
    assert body["errors"][0]["loc"][0] == "query"


# --- devices ------------------------------------------------------------------------------

def test_device_detail_has_the_newest_state(world, client, op):
    newest = world.readings["s11"][-1]
    body = get(client, f"/api/v1/devices/{world.devices['s11']}", op).json()
    assert body["serial"] == newest.identity.serial
    assert body["manufacturer"] == newest.identity.manufacturer
    assert body["model"]["name"] == newest.identity.model
    assert body["ip"] == newest.identity.ip
    assert body["mac"] == newest.identity.mac
    assert body["tenant"] == {"id": world.tenants["s11"].pk, "kind": "site", "name": "Berlin"}
    assert body["status"] == "warning"  # the open tonerLow alert is a warning
    assert body["last_seen"] == iso(newest.taken_at)
    assert body["first_seen"] == iso(T0)
    counters = {c["name"]: c for c in body["counters"]}
    assert counters["total"]["value"] == newest.counter("total") == 1250
    assert counters["total"]["delta"] == 1250 - 1100
    assert counters["mono"]["value"] == newest.counter("mono")
    toner, waste = body["supplies"]
    assert toner["type"] == "toner"
    assert toner["colour"] == "black"
    assert toner["level_percent"] == newest.supplies[0].level_percent == 40.0
    assert toner["part_number"] == "842311"
    assert waste["level_percent"] is None
    assert waste["state"] == "some-remaining"
    assert waste["raw_level"] == -3
    assert waste["raw_max"] == -2
    assert [a["code"] for a in body["open_alerts"]] == [TONER_LOW.code]


def test_readings_newest_first_with_counters_and_supplies(world, client, op):
    device_id = world.devices["s11"]
    built = world.readings["s11"]
    body = get(client, f"/api/v1/devices/{device_id}/readings", op).json()
    assert body["count"] == 3
    items = body["items"]
    assert [r["taken_at"] for r in items] == [iso(r.taken_at) for r in reversed(built)]
    assert [{c["name"]: c["value"] for c in r["counters"]} for r in items] == [
        {c.name: c.value for c in r.counters} for r in reversed(built)]
    assert [next(c["delta"] for c in r["counters"] if c["name"] == "total")
            for r in items] == [150, 100, None]
    assert [r["supplies"][0]["level_percent"] for r in items] == [40.0, 60.0, 80.0]
    assert all(r["device_id"] == device_id and r["snmp_version"] == "2c" for r in items)
    page = get(client, f"/api/v1/devices/{device_id}/readings", op, limit=1, offset=1).json()
    assert [r["taken_at"] for r in page["items"]] == [iso(built[1].taken_at)]
    window = get(client, f"/api/v1/devices/{device_id}/readings", op,
                 since=iso(T0 + timedelta(minutes=30)),
                 until=iso(T0 + timedelta(hours=2))).json()
    assert [r["taken_at"] for r in window["items"]] == [iso(built[1].taken_at)]


@pytest.mark.parametrize(("params", "sites"), [
    ({"q": "S12B"}, {"s12"}),
    ({"q": "ecosys"}, {"s12"}),  # model name, any case
    ({"q": "10.0.2.30"}, {"s21"}),
    ({"q": "ricoh im"}, {"s11", "s31"}),  # every word must match somewhere
    ({"manufacturer": "hp"}, {"s21"}),
    ({"status": "warning"}, {"s11", "s21"}),
    ({"status": "ok"}, {"s12", "s31"}),
    ({"device_kind": "mfp"}, {"s11", "s12", "s21", "s31"}),
    ({"device_kind": "scanner"}, set()),
])
def test_device_filters(world, client, op, params, sites):
    body = get(client, "/api/v1/devices", op, **params).json()
    assert {d["id"] for d in body["items"]} == {world.devices[s] for s in sites}
    assert body["count"] == len(sites)


def test_device_filter_by_tenant_node(world, client, op):
    def ids(tenant):
        items = get(client, "/api/v1/devices", op, tenant=world.tenants[tenant].pk)
        return {d["id"] for d in items.json()["items"]}

    assert ids("dA") == {world.devices[s] for s in ("s11", "s12", "s21")}
    assert ids("c1") == {world.devices[s] for s in ("s11", "s12")}
    assert ids("s12") == {world.devices["s12"]}
    assert ids("l111") == set()  # no device placed at that location


def test_device_ordering(world, client, op):
    def serials(ordering):
        items = get(client, "/api/v1/devices", op, ordering=ordering).json()["items"]
        return [d["serial"] for d in items]

    assert serials("serial") == ["S11A", "S12B", "S21C", "S31D"]
    assert serials("-serial") == ["S31D", "S21C", "S12B", "S11A"]
    assert serials("-id") == [world.serials[s] for s in
                              sorted(world.devices, key=world.devices.get, reverse=True)]
    assert_error(get(client, "/api/v1/devices", op, ordering="password"), 422,
                 "validation_error")


def test_unknown_device_is_a_404(client, op):
    assert_error(get(client, "/api/v1/devices/987654321", op), 404, "not_found")
    assert_error(get(client, "/api/v1/devices/987654321/readings", op), 404, "not_found")
    assert_error(get(client, "/api/v1/devices/0", op), 422, "validation_error")


# --- alerts -------------------------------------------------------------------------------

def test_alerts_open_closed_and_all(world, client, op):
    device_id = world.devices["s11"]
    open_ = get(client, "/api/v1/alerts", op).json()["items"]
    assert [(a["device_id"], a["code"], a["severity"]) for a in open_] == [
        (device_id, TONER_LOW.code, TONER_LOW.severity)]
    (toner,) = open_
    assert toner["opened_at"] == iso(T0 + timedelta(hours=1))
    assert toner["last_seen_at"] == iso(T0 + timedelta(hours=2))
    assert toner["closed_at"] is None
    assert toner["is_open"]
    closed = get(client, "/api/v1/alerts", op, state="closed").json()["items"]
    assert [(a["code"], a["closed_at"]) for a in closed] == [
        (JAMMED.code, iso(T0 + timedelta(hours=1)))]
    everything = get(client, "/api/v1/alerts", op, state="all").json()
    assert [a["code"] for a in everything["items"]] == [TONER_LOW.code, JAMMED.code]
    assert everything["count"] == 2


def test_alert_filters(world, client, op):
    def codes(**params):
        return [a["code"] for a in
                get(client, "/api/v1/alerts", op, state="all", **params).json()["items"]]

    assert codes(severity="critical") == [JAMMED.code]
    assert codes(severity="warning") == [TONER_LOW.code]
    assert codes(device=world.devices["s12"]) == []
    assert codes(device=world.devices["s11"]) == [TONER_LOW.code, JAMMED.code]
    assert codes(since=iso(T0 + timedelta(minutes=30))) == [TONER_LOW.code]
    assert_error(get(client, "/api/v1/alerts", op, device=987654321), 404, "not_found")
    assert_error(get(client, "/api/v1/alerts", op, since="0.5"), 422, "validation_error")
    assert_error(get(client, "/api/v1/alerts", op, since="2025-03-03T08:00:00"), 422,
                 "validation_error")  # a time without a time zone is ambiguous


# --- sites --------------------------------------------------------------------------------

def test_site_list_and_filters(world, client, op):
    def names(**params):
        return [n["name"] for n in get(client, "/api/v1/sites", op, **params).json()["items"]]

    assert names(kind="site") == ["Berlin", "Hamburg", "Munich", "Vienna"]
    assert names(parent=world.tenants["c1"].pk) == ["Berlin", "Hamburg"]
    assert names(q="ber") == ["Berlin", "Berlin 2nd floor"]
    top = get(client, "/api/v1/sites", op, limit=3).json()
    assert top["count"] == 11
    assert [(n["name"], n["depth"], n["parent_id"]) for n in top["items"]] == [
        ("Platform", 0, None), ("Dealer A", 1, world.tenants["op"].pk),
        ("Dealer B", 1, world.tenants["op"].pk)]
    detail = get(client, f"/api/v1/sites/{world.tenants['l111'].pk}", op).json()
    assert detail == {"id": world.tenants["l111"].pk, "kind": "location",
                      "name": "Berlin 2nd floor", "parent_id": world.tenants["s11"].pk,
                      "depth": 4}


# --- errors -------------------------------------------------------------------------------

def test_error_shapes(world, client, op, settings, monkeypatch):
    # 401, with the challenge header.
    unauth = assert_error(client.get("/api/v1/sites"), 401, "not_authenticated")
    assert "Bearer" in unauth["detail"]
    # 404 inside the API, and for any path below /api/ that is no route.
    assert_error(get(client, "/api/v1/sites/987654321", op), 404, "not_found")
    assert_error(client.get("/api/v2/devices"), 404, "not_found")
    assert_error(client.get("/api/v1/devices/"), 404, "not_found")
    # 422 with the offending field.
    body = assert_error(get(client, "/api/v1/sites", op, kind="galaxy"), 422,
                        "validation_error")
    assert body["errors"][0]["loc"] == ["query", "kind"]
    # 400: a body that is not JSON.
    assert_error(client.post("/api/v1/tokens", "{", content_type="application/json"), 400,
                 "bad_request")
    # 429 per user, with Retry-After.
    settings.FLEETROOM_API_RATE = "2/m"
    get(client, "/api/v1/sites", op)
    get(client, "/api/v1/sites", op)
    throttled = get(client, "/api/v1/sites", op)
    assert_error(throttled, 429, "throttled")
    assert 1 <= int(throttled["Retry-After"]) <= 60
    # Another user has their own budget.
    assert get(client, "/api/v1/sites", issue(world.users["c1_viewer"])).status_code == 200
    settings.FLEETROOM_API_RATE = "600/m"
    cache.clear()
    # 500: logged, and answered as JSON without internals.
    from fleetroom.api.v1 import sites

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sites, "paginate", explode)
    crashed = assert_error(get(client, "/api/v1/sites", op), 500, "server_error")
    assert "secret" not in crashed["detail"]


def test_api_pages_carry_the_security_headers(client, op):
    response = get(client, "/api/v1/devices", op)
    assert response["Content-Security-Policy"] == CSP
    assert response["X-Content-Type-Options"] == "nosniff"


# --- discovery and documentation ----------------------------------------------------------

def test_api_root_points_at_the_docs(client):
    body = client.get("/api/").json()
    assert body["docs"].endswith("/api/docs")
    assert body["openapi"].endswith("/api/openapi.json")
    assert body["versions"]["v1"].endswith("/api/v1/")


def test_openapi_document(client):
    spec = client.get("/api/openapi.json").json()
    assert spec["info"]["title"] == "Fleetroom API"
    assert set(spec["paths"]) == {
        "/api/v1/tokens", "/api/v1/tokens/{key_id}", "/api/v1/devices",
        "/api/v1/devices/{device_id}", "/api/v1/devices/{device_id}/readings",
        "/api/v1/alerts", "/api/v1/sites", "/api/v1/sites/{site_id}",
        "/api/v1/agents", "/api/v1/agents/{agent_id}", "/api/v1/agents/{agent_id}/commands",
        "/api/v1/agents/{agent_id}/schedule", "/api/v1/agents/{agent_id}/suspend",
        "/api/v1/agents/{agent_id}/unsuspend", "/api/v1/agents/{agent_id}/revoke",
        "/api/v1/agents/{agent_id}/reenroll", "/api/v1/enrollment-tokens",
        "/api/v1/enrollment-tokens/{token_id}"}
    assert spec["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    create = spec["paths"]["/api/v1/tokens"]["post"]
    assert "security" not in create  # the one route that needs no token
    listing = spec["paths"]["/api/v1/devices"]["get"]
    assert listing["security"] == [{"BearerToken": []}]
    assert {"200", "401", "422", "429"} <= set(listing["responses"])


def test_docs_page_works_under_the_csp(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert page["Content-Security-Policy"] == CSP
    assert_no_inline_code(page.text)
    assert "swagger-ui-bundle.js" in page.text
    assert "swagger-ui-init.js" in page.text

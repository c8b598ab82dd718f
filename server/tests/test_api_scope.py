"""A token sees exactly what its user sees: own / child / sibling / foreign tenant →
data or 404, on every API route, and a change of membership counts at once."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from fleetroom.core.scoping import SYSTEM
from fleetroom.fleet.models import Device
from fleetroom.tenancy.models import Membership
from fleetroom.tenancy.services import do_deactivate, do_revoke_membership

from server.tests.test_api_support import SITES, build_world, get, issue

pytestmark = pytest.mark.django_db

# Which sites' devices each user sees (from the memberships in build_world).  From
# c1_admin's point of view: c1 is its own tenant, s11/s12 its children, s21 (customer 2
# of the same dealer) a sibling and s31 (another dealer's customer) foreign.
DEVICE_SCOPE = {
    "op_admin": {"s11", "s12", "s21", "s31"},
    "dA_admin": {"s11", "s12", "s21"},
    "c1_admin": {"s11", "s12"},
    "c1_viewer": {"s11", "s12"},
    "s11_viewer": {"s11"},  # restricted to one site: its sibling site s12 is out of scope
    "c3_viewer": {"s31"},
    "nobody": set(),
}
NODE_SCOPE = {
    "op_admin": {"op", "dA", "c1", "s11", "l111", "s12", "c2", "s21", "dB", "c3", "s31"},
    "dA_admin": {"dA", "c1", "s11", "l111", "s12", "c2", "s21"},
    "c1_admin": {"c1", "s11", "l111", "s12"},
    "c1_viewer": {"c1", "s11", "l111", "s12"},
    "s11_viewer": {"s11", "l111"},
    "c3_viewer": {"c3", "s31"},
    "nobody": set(),
}


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


@pytest.mark.parametrize("user_key", sorted(DEVICE_SCOPE))
def test_device_routes_follow_the_users_scope(world, client, user_key):
    token = issue(world.users[user_key])
    listed = get(client, "/api/v1/devices", token, limit=500)
    assert listed.status_code == 200
    expected = {world.devices[k] for k in DEVICE_SCOPE[user_key]}
    assert {d["id"] for d in listed.json()["items"]} == expected
    assert listed.json()["count"] == len(expected)
    for site in SITES:
        device_id = world.devices[site]
        visible = site in DEVICE_SCOPE[user_key]
        want = 200 if visible else 404
        detail = get(client, f"/api/v1/devices/{device_id}", token)
        assert detail.status_code == want, (user_key, site)
        readings = get(client, f"/api/v1/devices/{device_id}/readings", token)
        assert readings.status_code == want, (user_key, site)
        alerts = get(client, "/api/v1/alerts", token, device=device_id, state="all")
        assert alerts.status_code == want, (user_key, site)
        if not visible:
            # Out of scope looks exactly like missing.
            assert detail.json() == get(client, "/api/v1/devices/999999999", token).json()
        else:
            assert detail.json()["serial"] == world.serials[site]
            assert readings.json()["count"] == len(world.readings[site])


@pytest.mark.parametrize("user_key", sorted(NODE_SCOPE))
def test_site_routes_follow_the_users_scope(world, client, user_key):
    token = issue(world.users[user_key])
    listed = get(client, "/api/v1/sites", token, limit=500)
    assert listed.status_code == 200
    ids = {n["id"] for n in listed.json()["items"]}
    assert ids == {world.tenants[k].pk for k in NODE_SCOPE[user_key]}
    for key, node in world.tenants.items():
        want = 200 if key in NODE_SCOPE[user_key] else 404
        assert get(client, f"/api/v1/sites/{node.pk}", token).status_code == want
        # A filter naming a node outside the scope is a 404 as well, not an empty list.
        assert get(client, "/api/v1/devices", token, tenant=node.pk).status_code == want
        assert get(client, "/api/v1/sites", token, parent=node.pk).status_code == want


def test_parent_ids_above_the_scope_are_not_handed_out(world, client):
    token = issue(world.users["c1_viewer"])
    nodes = {n["id"]: n for n in get(client, "/api/v1/sites", token).json()["items"]}
    c1, s11 = world.tenants["c1"], world.tenants["s11"]
    assert nodes[c1.pk]["parent_id"] is None  # dealer A exists but is not c1_viewer's
    assert nodes[s11.pk]["parent_id"] == c1.pk
    op_token = issue(world.users["op_admin"])
    assert get(client, f"/api/v1/sites/{c1.pk}", op_token).json()["parent_id"] == \
        world.tenants["dA"].pk


def test_alert_list_only_holds_alerts_in_scope(world, client):
    for user_key, sites in DEVICE_SCOPE.items():
        token = issue(world.users[user_key], name=f"alerts-{user_key}")
        items = get(client, "/api/v1/alerts", token, state="all", limit=500).json()["items"]
        assert {a["device_id"] for a in items} <= {world.devices[k] for k in sites}
        if "s11" in sites:
            assert {a["device_id"] for a in items} >= {world.devices["s11"]}


def test_revoked_membership_takes_effect_at_once(world, client):
    token = issue(world.users["c1_viewer"])
    device_id = world.devices["s11"]
    assert get(client, f"/api/v1/devices/{device_id}", token).status_code == 200
    membership = Membership.objects.get(user=world.users["c1_viewer"])
    do_revoke_membership(membership, acting_user=SYSTEM)
    assert get(client, f"/api/v1/devices/{device_id}", token).status_code == 404
    assert get(client, "/api/v1/devices", token).json()["count"] == 0
    # The token itself is still valid: it simply acts as a user who now sees nothing.
    assert get(client, "/api/v1/tokens", token).status_code == 200


def test_deactivated_tenant_disappears_from_tokens(world, client):
    token = issue(world.users["dA_admin"])
    do_deactivate(world.tenants["c1"], SYSTEM)
    ids = {d["id"] for d in get(client, "/api/v1/devices", token).json()["items"]}
    assert ids == {world.devices["s21"]}
    assert get(client, f"/api/v1/devices/{world.devices['s11']}", token).status_code == 404


def test_a_moved_devices_old_history_stays_with_the_old_tenant(world, client):
    """Readings carry the reporting tenant: after a move the new owner sees the device
    but not the readings its previous customer reported.  (The device changes dealers,
    so the operator moves it first: another dealer's agent cannot take it.)"""
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.fleet.services import do_update_device, ingest_reading

    from server.tests.test_api_support import T0, reading

    old = world.readings["s31"][0]
    device_id = world.devices["s31"]
    do_update_device(Device.objects.get(pk=device_id), acting_user=SYSTEM,
                     tenant=world.tenants["s11"], location=None, tags=[], asset_number="",
                     cost_centre="")
    moved = reading("S31D", T0 + __import__("datetime").timedelta(days=1), total=950,
                    manufacturer="Ricoh", model="IM C3000", ip="10.0.0.99",
                    mac=old.identity.mac or "", black=85.0)
    assert ingest_reading(moved, tenant=world.tenants["s11"]).outcome == "stored"
    assert Device.objects.get(pk=device_id).tenant_id == world.tenants["s11"].pk
    c1 = issue(world.users["c1_viewer"])
    body = get(client, f"/api/v1/devices/{device_id}/readings", c1).json()
    assert [r["taken_at"] for r in body["items"]] == ["2025-03-04T08:00:00Z"]
    c3 = issue(world.users["c3_viewer"])
    assert get(client, f"/api/v1/devices/{device_id}", c3).status_code == 404

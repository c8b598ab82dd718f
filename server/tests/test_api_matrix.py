"""Route matrix of the API app: every URL pattern × method × who × where.

Every URL pattern of ``fleetroom.api.urls`` (the ninja operations included) must appear
in :data:`ROUTES`; :func:`test_every_route_is_in_the_matrix` fails otherwise.  For each
route the matrix names its methods, how a caller authenticates and which permission it
needs; the tests then check what the customer administrator and the customer viewer of
customer 1 (``c1``), a user without any membership, and a caller without credentials
get for an object of c1 itself (``own``), below it (``child``: site s11), of the
sibling customer c2 and of the foreign dealer B's customer c3.  Out of scope is always
a 404 — the same answer as for an id that does not exist — never a 403.  Also checked
on every route: methods not listed answer 405, and every answer carries the CSP.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver
from fleetroom.accounts.testing import PASSWORD, post_login
from fleetroom.api import urls as api_urls
from fleetroom.api.models import ApiToken
from fleetroom.core.middleware import CSP
from fleetroom.fleet.services import ingest_reading

from server.tests.test_agents_api_matrix import ROUTES as AGENT_ROUTES
from server.tests.test_api_support import T0, World, bearer, build_world, issue, reading

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    """One URL pattern of the API app."""

    path: str
    """With ``{device}``, ``{node}``, ``{key_id}`` or ``{token_id}`` for the object."""
    methods: frozenset[str]
    auth: str
    """``token`` (Bearer), ``credentials`` (login + password in the body), ``session``
    (the web page: login required) or ``none``."""
    permission: str
    """What the caller needs: ``view_fleet`` on the object's tenant, ``owner`` (one's own
    token), ``login`` or ``none``."""
    target: str | None = None
    """The kind of object the URL names: device, node, token, web_token."""


GET, POST, DELETE = frozenset({"GET"}), frozenset({"POST"}), frozenset({"DELETE"})

ROUTES: dict[str, Route] = {
    # The API (django-ninja), below /api/v1/.
    "create_token": Route("/api/v1/tokens", POST | GET, "credentials", "none"),
    "list_tokens": Route("/api/v1/tokens", GET | POST, "token", "owner"),
    "revoke_token": Route("/api/v1/tokens/{key_id}", DELETE, "token", "owner", "token"),
    "list_devices": Route("/api/v1/devices?tenant={node}", GET, "token", "view_fleet", "node"),
    "get_device": Route("/api/v1/devices/{device}", GET, "token", "view_fleet", "device"),
    "list_readings": Route("/api/v1/devices/{device}/readings", GET, "token", "view_fleet",
                           "device"),
    "list_alerts": Route("/api/v1/alerts?device={device}", GET, "token", "view_fleet",
                         "device"),
    "list_sites": Route("/api/v1/sites?parent={node}", GET, "token", "view_fleet", "node"),
    "get_site": Route("/api/v1/sites/{node}", GET, "token", "view_fleet", "node"),
    # Documentation and discovery: public.
    "openapi-json": Route("/api/openapi.json", GET, "none", "none"),
    "openapi-view": Route("/api/docs", GET, "none", "none"),
    "api_index": Route("/api/", GET, "none", "none"),
    "api-root": Route("/api/", GET, "none", "none"),
    # ninja's own root pattern; shadowed by api_index, kept so ninja can compute its paths.
    "api_not_found": Route("/api/no/such/thing", frozenset(), "none", "none"),
    # The web page (session login, CSRF).
    "api_token_list": Route("/api/account/tokens/", GET | POST, "session", "login"),
    "api_token_revoke": Route("/api/account/tokens/{token_id}/revoke/", POST, "session",
                              "owner", "web_token"),
}
"""``create_token`` and ``list_tokens`` share one path, so each lists both methods."""

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ACTORS = ("c1_admin", "c1_viewer", "nobody", "anonymous")
RELATIONS = ("own", "child", "sibling", "foreign")
NODE = {"own": "c1", "child": "s11", "sibling": "c2", "foreign": "c3"}
DEVICE_SITE = {"child": "s11", "sibling": "s21", "foreign": "s31"}
SEES = {"c1_admin": {"own", "child"}, "c1_viewer": {"own", "child"}, "nobody": set()}


def _names(patterns) -> set[str]:
    out: set[str] = set()
    for p in patterns:
        if isinstance(p, URLResolver):
            out |= _names(p.url_patterns)
        elif isinstance(p, URLPattern):
            out.add(p.name)
    return out


def test_every_route_is_in_the_matrix():
    # The agents endpoints have their own matrix (test_agents_api_matrix.py).
    assert _names(api_urls.urlpatterns) == set(ROUTES) | set(AGENT_ROUTES)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world() -> World:
    w = build_world()
    # A device reported straight to the customer (a customer without sites may do so):
    # the "own" object of c1.
    result = ingest_reading(reading("C1OWN", T0, total=10, mac="00:11:22:33:44:99",
                                    ip="10.0.9.9"), tenant=w.tenants["c1"])
    w.devices["c1"] = result.device_id
    return w


def url_for(route: Route, w: World, relation: str, **ids: object) -> str:
    node = w.tenants[NODE[relation]].pk
    device = w.devices["c1" if relation == "own" else DEVICE_SITE[relation]]
    return route.path.format(node=node, device=device, **ids)


def check_csp(response) -> None:
    assert response["Content-Security-Policy"] == CSP


@pytest.mark.parametrize("name", [n for n, r in ROUTES.items()
                                  if r.permission == "view_fleet"])
def test_fleet_routes(world, name):
    """view_fleet routes: own and child are data, sibling and foreign are 404; a user
    without membership gets 404 everywhere; no token is 401."""
    route = ROUTES[name]
    client = Client()
    tokens = {actor: issue(world.users[actor], name=actor) for actor in SEES}
    for relation in RELATIONS:
        path = url_for(route, world, relation)
        anonymous = client.get(path)
        assert anonymous.status_code == 401, (name, relation)
        check_csp(anonymous)
        for actor, token in tokens.items():
            response = client.get(path, headers=bearer(token))
            want = 200 if relation in SEES[actor] else 404
            assert response.status_code == want, (name, actor, relation)
            check_csp(response)


def test_token_routes(world):
    client = Client()
    mine = issue(world.users["c1_admin"], name="mine")
    other = issue(world.users["c1_viewer"], name="other")
    other_key = other.split("_")[1]
    assert client.get("/api/v1/tokens").status_code == 401
    assert client.get("/api/v1/tokens", headers=bearer(mine)).status_code == 200
    assert client.delete(f"/api/v1/tokens/{other_key}").status_code == 401
    response = client.delete(f"/api/v1/tokens/{other_key}", headers=bearer(mine))
    assert response.status_code == 404  # someone else's token: as if it did not exist
    assert client.get("/api/v1/tokens", headers=bearer(other)).status_code == 200
    nobody = issue(world.users["nobody"], name="nobody's")
    assert client.get("/api/v1/tokens", headers=bearer(nobody)).status_code == 200
    bad = client.post("/api/v1/tokens", {"login": "c1_admin", "password": "wrong " * 4,
                                         "name": "x"}, content_type="application/json")
    assert bad.status_code == 401
    good = client.post("/api/v1/tokens", {"login": "c1_admin", "password": PASSWORD,
                                          "name": "x"}, content_type="application/json")
    assert good.status_code == 201
    check_csp(good)
    own_key = mine.split("_")[1]
    assert client.delete(f"/api/v1/tokens/{own_key}", headers=bearer(mine)).status_code == 204


def test_public_routes():
    client = Client()
    for name in ("openapi-json", "openapi-view", "api_index"):
        response = client.get(ROUTES[name].path)
        assert response.status_code == 200, name
        check_csp(response)
    for method in ALL_METHODS:
        response = client.generic(method, ROUTES["api_not_found"].path)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_web_routes(world):
    anonymous = Client()
    for name in ("api_token_list", "api_token_revoke"):
        path = ROUTES[name].path.format(token_id=1)
        method = "get" if name == "api_token_list" else "post"
        response = getattr(anonymous, method)(path)
        assert response.status_code == 302
        assert "/accounts/login/" in response["Location"]
    issue(world.users["c1_viewer"], name="someone else's")
    theirs = ApiToken.objects.get()
    web = Client()
    post_login(web, "c1_admin", PASSWORD)
    page = web.get(ROUTES["api_token_list"].path)
    assert page.status_code == 200
    check_csp(page)
    revoke = ROUTES["api_token_revoke"].path.format(token_id=theirs.pk)
    assert web.post(revoke).status_code == 404
    issue(world.users["c1_admin"], name="mine")
    mine = ApiToken.objects.get(user=world.users["c1_admin"])
    response = web.post(ROUTES["api_token_revoke"].path.format(token_id=mine.pk))
    assert response.status_code == 302


@pytest.mark.parametrize("name", [n for n, r in ROUTES.items()
                                  if r.methods and n != "api-root"])
def test_methods_not_listed_are_405(world, name):
    route = ROUTES[name]
    client = Client()
    web = Client()
    post_login(web, "c1_admin", PASSWORD)
    token = issue(world.users["c1_admin"])
    issue(world.users["c1_admin"], name="target")
    target = ApiToken.objects.get(name="target")
    path = url_for(route, world, "child", key_id=target.key_id, token_id=target.pk)
    for method in ALL_METHODS:
        if method in route.methods:
            continue
        caller = web if route.auth == "session" else client
        response = caller.generic(method, path, headers=bearer(token))
        assert response.status_code == 405, (name, method)
        check_csp(response)

"""Route matrix of the fleet pages: every route × method × who × where.

Every URL pattern of ``fleetroom.fleet.urls`` must appear in :data:`ROUTES`
(:func:`test_every_route_is_in_the_matrix` fails otherwise, and so does the
project-wide ``test_route_matrix``).  For each route the matrix says what Acme's
customer administrator (view, edit, export), Acme's customer viewer (view only),
Dealer A's technician (view and edit, no export), someone without any membership and
an anonymous visitor get for a device — or, on the list and the export, a
customer/site filter — of Acme itself (``own``), of its site Berlin (``child``), of
the sibling customer Initech and of the foreign Dealer B's customer Globex.  Out of
scope is always 404, never 403; a permission held on the object's tenant's scope but
not for this action is 403 (the object is visible, nothing is revealed); the export,
whose permission a user may hold nowhere, is 403 then; anonymous visitors go to the
login.  Also checked per route: methods that are not allowed (405), CSRF on the POST,
the CSP header and no inline script or style on every page.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from fleetroom.accounts.testing import assert_no_inline_code
from fleetroom.core.middleware import CSP
from fleetroom.core.models import AuditEvent
from fleetroom.fleet import urls as fleet_urls

from server.tests.test_fleet_views import build_world, client_for

pytestmark = pytest.mark.django_db

OK = "ok"
GET = frozenset({"GET"})
BOTH = frozenset({"GET", "POST"})
ACTORS = ("admin", "viewer", "tech", "nobody")
USER_OF = {"admin": "acme_admin", "viewer": "acme_viewer", "tech": "tech", "nobody": "nobody"}
RELATIONS = ("own", "child", "sibling", "foreign")
DEVICE_OF = {"own": "BR0005", "child": "KY0001", "sibling": "IN0006", "foreign": "GX0007"}
TENANT_OF = {"own": "acme", "child": "berlin", "sibling": "initech", "foreign": "globex"}
SEES = {"admin": {"own", "child"}, "viewer": {"own", "child"},
        "tech": {"own", "child", "sibling"}, "nobody": set()}
"""Where each actor holds view_fleet."""


@dataclass(frozen=True)
class Route:
    """Allowed methods, what the URL names (a device, a tenant filter or nothing) and
    the permission the action needs besides view_fleet."""

    methods: frozenset[str]
    target: str | None
    """``device`` (in the path), ``filter`` (``?tenant=``) or ``None``."""
    needs: str | None = None
    """``edit`` (edit_devices) or ``export`` (export_data)."""


ROUTES: dict[str, Route] = {
    "dashboard": Route(GET, None),
    "device_list": Route(GET, "filter"),
    "device_export": Route(GET, "filter", needs="export"),
    "device_detail": Route(GET, "device"),
    "device_edit": Route(BOTH, "device", needs="edit"),
}

HOLDS = {"edit": {"admin", "tech"}, "export": {"admin"}}


def expected(route: Route, actor: str, relation: str | None) -> str | int:
    """What ``actor`` gets for an object (or filter) in ``relation`` to Acme."""
    if route.needs == "export" and actor not in HOLDS["export"]:
        return 403  # export_data held nowhere: no object is revealed by saying so
    if relation is None:
        return OK  # a page of one's own scope, empty for someone without any
    if relation not in SEES[actor]:
        return 404
    if route.needs is not None and actor not in HOLDS[route.needs]:
        return 403  # the device is visible to them; only the action is not theirs
    return OK


def address(name: str, route: Route, relation: str | None, t, devices) -> str:
    if route.target == "device":
        return reverse(f"fleet:{name}", args=[devices[DEVICE_OF[relation or "own"]].pk])
    base = reverse(f"fleet:{name}")
    if route.target == "filter" and relation is not None:
        return f"{base}?tenant={t[TENANT_OF[relation]].pk}"
    return base


def check(response, want: str | int, method: str) -> None:
    assert response.headers.get("Content-Security-Policy") == CSP
    if want == OK:
        assert response.status_code == 200, response.status_code
        if method == "GET" and response.headers["Content-Type"].startswith("text/html"):
            assert_no_inline_code(response.content.decode())
    else:
        assert response.status_code == want, (response.status_code, want)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_every_route_is_in_the_matrix():
    names = {p.name for p in fleet_urls.urlpatterns}
    assert names == set(ROUTES), names ^ set(ROUTES)
    for name, route in ROUTES.items():  # mounted under the namespace the menu uses
        args = [1] if route.target == "device" else []
        assert reverse(f"fleet:{name}", args=args).startswith("/fleet/")


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_route(name):
    route = ROUTES[name]
    t, devices, u = build_world()
    clients = {who: client_for(u[USER_OF[who]]) for who in ACTORS}
    relations: tuple[str | None, ...] = (None,)
    if route.target == "filter":
        relations = (None, *RELATIONS)
    elif route.target == "device":
        relations = RELATIONS

    # Anonymous: the login page, for every method the route allows.
    for relation in relations:
        for method in sorted(route.methods):
            r = getattr(Client(), method.lower())(address(name, route, relation, t, devices))
            assert r.status_code == 302
            assert r.headers["Location"].startswith(reverse("account_login"))

    # Methods the route does not allow.
    first = address(name, route, relations[0], t, devices)
    for method in ("GET", "POST", "PUT", "DELETE"):
        if method not in route.methods:
            r = getattr(clients["admin"], method.lower())(first)
            assert r.status_code == 405, (method, r.status_code)

    # CSRF: a POST without the token is refused and changes nothing.
    if "POST" in route.methods:
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(u["acme_admin"])
        before = AuditEvent.objects.count()
        r = strict.post(address(name, route, "own", t, devices),
                        {"tenant": t["berlin"].pk, "asset_number": "X"})
        assert r.status_code == 403
        assert AuditEvent.objects.count() == before

    for who in ACTORS:
        for relation in relations:
            want = expected(route, who, relation)
            url = address(name, route, relation, t, devices)
            if "GET" in route.methods:
                check(clients[who].get(url), want, "GET")
            if "POST" in route.methods:
                before = AuditEvent.objects.count()
                # An empty form: refused where not allowed, the form again where it is.
                check(clients[who].post(url, {}), want, "POST")
                assert AuditEvent.objects.count() == before

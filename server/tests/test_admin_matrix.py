"""Route matrix of the administration pages: every route × method × who × where.

Every URL pattern of ``fleetroom.tenancy.urls`` must appear in :data:`ROUTES`
(:func:`test_every_route_is_in_the_matrix` fails otherwise).  For each route the
matrix says what the customer administrator of Customer A, the customer viewer of A
(permission missing), someone without any membership, and an anonymous visitor get
for an object of their own customer (``own``), below it (``child``), of the sibling
customer B and of the foreign Dealer Two.  Out of scope is always 404, never 403;
a page about a permission held nowhere is 403; anonymous visitors go to the login.
Also checked per route: methods that are not allowed (405), CSRF on every POST,
the CSP header and no inline script or style on every page.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.urls import reverse
from fleetroom.accounts.testing import assert_no_inline_code
from fleetroom.core.models import AuditEvent
from fleetroom.tenancy import urls as tenancy_urls

from server.tests.test_admin_support import World, build_world, client_for, url

pytestmark = pytest.mark.django_db

OK = "ok"


@dataclass(frozen=True)
class Route:
    """Allowed methods, the kind of object in the URL (or none), the owner-only rule."""

    methods: frozenset[str]
    target: str | None = None
    needs: str | None = None
    """For pages without an object: which actors may open them ("tree", "admin", "any")."""
    customer_node_404: bool = False
    """For tenant routes: the customer node itself is outside the action's scope
    (renaming, moving, deactivating a customer needs manage_tenants, which a
    customer administrator does not hold)."""


GET = frozenset({"GET"})
POST = frozenset({"POST"})
BOTH = frozenset({"GET", "POST"})

ROUTES: dict[str, Route] = {
    "site_list": Route(GET, needs="tree"),
    "tenant_detail": Route(GET, "tenant"),
    "tenant_create": Route(BOTH, "tenant"),
    "tenant_rename": Route(BOTH, "tenant", customer_node_404=True),
    "tenant_move": Route(BOTH, "tenant", customer_node_404=True),
    "tenant_deactivate": Route(BOTH, "tenant", customer_node_404=True),
    "tenant_reactivate": Route(POST, "tenant", customer_node_404=True),
    "user_list": Route(GET, needs="admin"),
    "user_create": Route(BOTH, needs="admin"),
    "user_detail": Route(GET, "user"),
    "membership_grant": Route(BOTH, "user"),
    "user_unlock": Route(POST, "user"),
    "user_deactivate": Route(BOTH, "user"),
    "user_reactivate": Route(POST, "user"),
    "user_password_link": Route(POST, "user"),
    "membership_change": Route(BOTH, "membership"),
    "membership_revoke": Route(BOTH, "membership"),
    "role_list": Route(GET, needs="admin"),
    "role_create": Route(BOTH, needs="admin"),
    "role_edit": Route(BOTH, "role"),
    "access_code_list": Route(GET, needs="admin"),
    "access_code_create": Route(BOTH, needs="admin"),
    "access_code_revoke": Route(BOTH, "code"),
    "access_code_redeem": Route(BOTH, needs="any"),
    "profile": Route(GET, needs="any"),
}

RELATIONS = ("own", "child", "sibling", "foreign")


def target_args(w: World, target: str, relation: str) -> list[int] | None:
    """The URL argument for an object of ``target`` kind in ``relation`` to Customer A."""
    if target == "tenant":
        return [{"own": w.ca, "child": w.a_north, "sibling": w.b_main,
                 "foreign": w.z_main}[relation].pk]
    if relation == "child":
        return None  # only tenants have a "below"
    if target == "user":
        return [{"own": w.a_viewer, "sibling": w.b_admin, "foreign": w.z_viewer}[relation].pk]
    if target == "membership":
        who, where = {"own": (w.a_viewer, w.ca), "sibling": (w.b_admin, w.cb),
                      "foreign": (w.z_viewer, w.cz)}[relation]
        return [w.membership(who, where).pk]
    if target == "role":
        return [{"own": w.role_a, "sibling": w.role_b, "foreign": w.role_z}[relation].pk]
    if target == "code":
        return [{"own": w.code_a, "sibling": w.code_b, "foreign": w.code_z}[relation].pk]
    raise AssertionError(target)


def expected(route: Route, actor: str, relation: str | None) -> str | int:
    """What ``actor`` ("admin", "viewer", "nobody") gets; OK means allowed."""
    if route.target is None:
        allowed = {"tree": {"admin", "viewer"}, "admin": {"admin"},
                   "any": {"admin", "viewer", "nobody"}}[route.needs or ""]
        return OK if actor in allowed else 403
    if relation in ("sibling", "foreign") or actor == "nobody":
        return 404
    if actor == "viewer":
        # Customer viewer: may look at the tree, may change nothing.
        name = next(n for n, r in ROUTES.items() if r is route)
        return OK if name == "tenant_detail" else 404
    if route.customer_node_404 and relation == "own":
        return 404
    return OK


def check(response, want: str | int, method: str) -> None:
    if want == OK:
        assert response.status_code not in (403, 404, 405), response.status_code
        assert response.status_code < 500
        if method == "GET":
            assert response.status_code == 200
            assert "Content-Security-Policy" in response.headers
            assert_no_inline_code(response.content.decode())
    else:
        assert response.status_code == want, (response.status_code, want)


def test_every_route_is_in_the_matrix():
    names = {p.name for p in tenancy_urls.urlpatterns}
    assert names == set(ROUTES), names ^ set(ROUTES)
    for name in names:  # and each is mounted, under the namespace the menu uses
        args = [1] if "<int:pk>" in str(next(p.pattern for p in tenancy_urls.urlpatterns
                                             if p.name == name)) else []
        assert reverse(f"tenancy:{name}", args=args).startswith("/admin/")


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_route(name):
    route = ROUTES[name]
    w = build_world()
    actors = {"admin": w.a_admin, "viewer": w.a_viewer, "nobody": w.nobody}
    clients = {who: client_for(u) for who, u in actors.items()}
    cases: list[tuple[str, str | None, list[int]]] = []
    if route.target is None:
        cases.append(("", None, []))
    else:
        for relation in RELATIONS:
            args = target_args(w, route.target, relation)
            if args is not None:
                cases.append((relation, relation, args))

    # Anonymous: the login page, for every method the route allows.
    for _label, _relation, args in cases:
        for method in sorted(route.methods):
            r = getattr(client_for(None), method.lower())(url(name, *args))
            assert r.status_code == 302
            assert r.headers["Location"].startswith(reverse("account_login"))

    # Methods the route does not allow.
    args = cases[0][2]
    for method in ("GET", "POST", "PUT", "DELETE"):
        if method not in route.methods:
            r = getattr(clients["admin"], method.lower())(url(name, *args))
            assert r.status_code == 405, (method, r.status_code)

    # CSRF: a POST without the token is refused and changes nothing.
    if "POST" in route.methods:
        own = next(c for c in cases if expected(route, "admin", c[1]) == OK)
        strict = client_for(w.a_admin, enforce_csrf_checks=True)
        before = AuditEvent.objects.count()
        r = strict.post(url(name, *own[2]), {})
        assert r.status_code == 403
        assert AuditEvent.objects.count() == before

    # Reads first, then writes that must be refused, then the allowed writes.
    for who in ("admin", "viewer", "nobody"):
        for _label, relation, args in cases:
            want = expected(route, who, relation)
            if "GET" in route.methods:
                check(clients[who].get(url(name, *args)), want, "GET")
    for who in ("viewer", "nobody", "admin"):
        for _label, relation, args in cases:
            want = expected(route, who, relation)
            if "POST" in route.methods and want != OK:
                before = AuditEvent.objects.count()
                check(clients[who].post(url(name, *args), {}), want, "POST")
                assert AuditEvent.objects.count() == before
    for _label, relation, args in cases:
        if "POST" in route.methods and expected(route, "admin", relation) == OK:
            check(clients["admin"].post(url(name, *args), {}), OK, "POST")


OBJECT_ROUTES = sorted(n for n, r in ROUTES.items() if r.target is not None)


@pytest.mark.parametrize("name", OBJECT_ROUTES)
def test_dealer_admin_sees_its_customers_but_not_the_other_dealer(name):
    """One level up: the dealer administrator of Dealer One manages Customer A and B,
    and gets a 404 for everything of Dealer Two."""
    route = ROUTES[name]
    w = build_world()
    client = client_for(w.d1_admin)
    for method in sorted(route.methods):
        call = getattr(client, method.lower())
        args = target_args(w, route.target or "", "foreign")
        assert call(url(name, *args)).status_code == 404
    if "GET" in route.methods:
        for relation in ("own", "sibling"):
            args = target_args(w, route.target or "", relation)
            assert client.get(url(name, *args)).status_code == 200

"""Route matrix of the agents pages: every route × method × who × where.

Every URL pattern of ``fleetroom.agents.urls`` must appear in :data:`ROUTES`
(:func:`test_every_route_is_in_the_matrix` fails otherwise, and so does the
project-wide ``test_route_matrix``).  Who: Acme's customer administrator and
customer viewer (``view_fleet`` on Acme, no ``manage_agents`` — agents stay with the
dealer), Dealer A's technician (``view_fleet`` and ``manage_agents`` on all of
Dealer A), someone without any membership and an anonymous visitor.  Where: an
agent (or its command, or a token or security event) of Acme itself (``own``), of
its site Berlin (``child``), of the sibling customer Initech's site Munich and of
the foreign Dealer B's site Paris.

Out of scope is always 404, never 403.  A visible agent the user may not change is
403 on its change routes.  Tokens and security events are visible only with
``manage_agents``, so there even a visible tenant's token is a 404; their list pages
answer 403 to someone who manages agents nowhere.  Also checked per route: methods
that are not allowed (405), CSRF on every POST (refused, nothing written), the CSP
header and no inline script or style on every page, and that a refused POST writes
nothing while an allowed one does what it says (an audit row).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from fleetroom.accounts.testing import assert_no_inline_code
from fleetroom.agents import urls as agents_urls
from fleetroom.agents.models import (
    AgentCommand,
    EnrollmentToken,
    ItemState,
    ReceivedItem,
    SecurityEvent,
)
from fleetroom.agents.services import (
    do_create_enrollment_token,
    do_issue_command,
    do_revoke_enrollment_token,
)
from fleetroom.core.middleware import CSP
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM

from server.tests.test_agents_support import enroll_request, post_enroll
from server.tests.test_agents_ui_support import (
    ACTORS,
    AGENT_TENANT,
    MANAGES,
    RELATIONS,
    SEES,
    UiWorld,
    build_world,
    client_for,
    send_items,
)

pytestmark = pytest.mark.django_db

OK = "ok"
GET = frozenset({"GET"})
POST = frozenset({"POST"})
BOTH = frozenset({"GET", "POST"})
ORDER = ("admin", "viewer", "nobody", "tech")
"""Refused actors first: the one allowed to change things acts last on each object."""


@dataclass(frozen=True)
class Route:
    """Allowed methods, the object the URL names and what the action needs."""

    methods: frozenset[str]
    target: str | None
    """``agent``, ``command``, ``problem``, ``token``, ``event`` (in the path) or
    ``None``."""
    needs: str
    """``view`` (view_fleet on the object), ``manage`` (view_fleet, else 404, and
    manage_agents, else 403), ``manage_object`` (manage_agents on the object, else 404)
    or ``manage_somewhere`` (held anywhere, else 403)."""
    post_ok: int = 302
    """What an allowed, empty POST answers (the POST is the confirmation, or the form
    comes back with its errors as 400)."""
    post_writes: bool | None = None
    """Whether that allowed empty POST writes an audit row (``None``: not checked)."""


ROUTES: dict[str, Route] = {
    "agent_list": Route(GET, None, "view"),
    "agent_detail": Route(GET, "agent", "view"),
    "agent_schedule": Route(BOTH, "agent", "manage", post_ok=400, post_writes=False),
    "agent_command": Route(POST, "agent", "manage", post_ok=400, post_writes=False),
    "command_cancel": Route(POST, "command", "manage", post_writes=True),
    "problem_retry": Route(POST, "problem", "manage", post_writes=False),
    "agent_rename": Route(BOTH, "agent", "manage", post_ok=400, post_writes=False),
    "agent_suspend": Route(BOTH, "agent", "manage", post_writes=True),
    "agent_unsuspend": Route(BOTH, "agent", "manage", post_writes=False),  # already active
    "agent_revoke": Route(BOTH, "agent", "manage", post_writes=True),
    "agent_reenroll": Route(BOTH, "agent", "manage", post_ok=200, post_writes=True),
    "token_list": Route(GET, None, "manage_somewhere"),
    "token_create": Route(BOTH, None, "manage_somewhere", post_ok=400, post_writes=False),
    "token_revoke": Route(BOTH, "token", "manage_object", post_writes=True),
    "security_events": Route(GET, None, "manage_somewhere"),
    "security_event_acknowledge": Route(POST, "event", "manage_object", post_writes=True),
}


def expected(route: Route, actor: str, relation: str | None) -> str | int:
    """What ``actor`` gets for an object in ``relation`` to Acme (or for the page)."""
    manages_somewhere = bool(MANAGES[actor])
    if route.needs == "manage_somewhere":
        return OK if manages_somewhere else 403
    if relation is None:
        return OK  # a list of one's own scope (empty for someone without any)
    if route.needs == "manage_object":
        return OK if relation in MANAGES[actor] else 404
    if relation not in SEES[actor]:
        return 404
    if route.needs == "manage" and relation not in MANAGES[actor]:
        return 403  # the agent is visible to them; only the change is not theirs
    return OK


@dataclass
class Objects:
    """Per relation: a command, an item problem, a token and a security event."""

    command: dict[str, AgentCommand]
    token: dict[str, EnrollmentToken]
    event: dict[str, SecurityEvent]
    problem: dict[str, ReceivedItem]


def build_objects(w: UiWorld) -> Objects:
    """An open command and an item problem (an invalid reading) for each agent; a token
    per tenant; a reuse alert per tenant (a revoked token tried at the real enroll
    endpoint)."""
    o = Objects({}, {}, {}, {})
    client = Client()
    for i, relation in enumerate(RELATIONS):
        tenant = w.t[AGENT_TENANT[relation]]
        o.command[relation] = do_issue_command(w.agent(relation), "scan-now",
                                               acting_user=SYSTEM)
        o.token[relation] = do_create_enrollment_token(tenant, acting_user=SYSTEM,
                                                       label=f"{relation} token")[0]
        spent, clear = do_create_enrollment_token(tenant, acting_user=SYSTEM)
        do_revoke_enrollment_token(spent, acting_user=SYSTEM)
        refused = post_enroll(client, enroll_request(clear)[0], ip=f"203.0.113.{20 + i}")
        assert refused.status_code == 403
        o.event[relation] = SecurityEvent.objects.get(token=spent)
        send_items(w.fake[relation], "readings", [{"schema": "not-a-reading"}])
        o.problem[relation] = ReceivedItem.objects.get(agent=w.agent(relation),
                                                       state=ItemState.PROBLEM)
    return o


def address(name: str, route: Route, relation: str | None, w: UiWorld, o: Objects) -> str:
    """The route's URL for the object in ``relation``."""
    if route.target is None or relation is None:
        return reverse(f"agents:{name}")
    agent = w.agent(relation)
    if route.target == "agent":
        return reverse(f"agents:{name}", args=[agent.public_id])
    if route.target == "command":
        return reverse(f"agents:{name}", args=[agent.public_id,
                                               o.command[relation].command_id])
    if route.target == "problem":
        return reverse(f"agents:{name}", args=[agent.public_id, o.problem[relation].pk])
    obj = o.token[relation] if route.target == "token" else o.event[relation]
    return reverse(f"agents:{name}", args=[obj.pk])


def check(response, want: str | int, method: str, route: Route) -> None:
    assert response.headers.get("Content-Security-Policy") == CSP
    if want != OK:
        assert response.status_code == want, (response.status_code, want)
        return
    status = 200 if method == "GET" else route.post_ok
    assert response.status_code == status, (response.status_code, status)
    if status != 302 and response.headers["Content-Type"].startswith("text/html"):
        assert_no_inline_code(response.content.decode())


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_every_route_is_in_the_matrix():
    names = {p.name for p in agents_urls.urlpatterns}
    assert names == set(ROUTES), names ^ set(ROUTES)
    for name in ROUTES:  # mounted under the namespace the menu uses
        pattern = next(p for p in agents_urls.urlpatterns if p.name == name)
        args = ["00000000-0000-4000-8000-000000000000"] * str(pattern.pattern).count("uuid:")
        args += [1] * str(pattern.pattern).count("int:")
        assert reverse(f"agents:{name}", args=args).startswith("/agents/")


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_route(name):
    route = ROUTES[name]
    w = build_world()
    o = build_objects(w)
    clients = {who: client_for(w.user(who)) for who in ACTORS}
    relations: tuple[str | None, ...] = RELATIONS if route.target else (None,)

    # Anonymous: the login page, for every method the route allows.
    for relation in relations:
        for method in sorted(route.methods):
            r = getattr(Client(), method.lower())(address(name, route, relation, w, o))
            assert r.status_code == 302
            assert r.headers["Location"].startswith(reverse("account_login"))

    # Methods the route does not allow.
    first = address(name, route, relations[0], w, o)
    for method in ("GET", "POST", "PUT", "DELETE"):
        if method not in route.methods:
            r = getattr(clients["tech"], method.lower())(first)
            assert r.status_code == 405, (method, r.status_code)

    # CSRF: a POST without the token is refused and changes nothing.
    if "POST" in route.methods:
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(w.user("tech"))
        before = AuditEvent.objects.count()
        r = strict.post(address(name, route, "own", w, o), {"kind": "scan-now"})
        assert r.status_code == 403
        assert AuditEvent.objects.count() == before

    if "GET" in route.methods:
        for who in ORDER:
            for relation in relations:
                want = expected(route, who, relation)
                check(clients[who].get(address(name, route, relation, w, o)), want, "GET",
                      route)
    if "POST" in route.methods:
        for who in ORDER:
            for relation in relations:
                want = expected(route, who, relation)
                before = AuditEvent.objects.count()
                check(clients[who].post(address(name, route, relation, w, o), {}), want,
                      "POST", route)
                wrote = AuditEvent.objects.count() > before
                if want != OK:
                    assert not wrote, (who, relation)
                elif route.post_writes is not None:
                    assert wrote == route.post_writes, (who, relation)

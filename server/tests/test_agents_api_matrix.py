"""Route matrix of the agents API: every endpoint × method × who × where.

Every ninja operation of :mod:`fleetroom.api.v1.agents` is listed in :data:`ROUTES`
(``test_api_matrix.test_every_route_is_in_the_matrix`` and the project-wide
``test_route_matrix`` read it).  Who and where are those of the agents pages'
matrix (``test_agents_matrix``): Acme's customer administrator and viewer (view,
no ``manage_agents``), Dealer A's technician (view and manage on all of Dealer A),
a user without membership, and a caller without a token; an agent, token or tenant
of Acme (``own``), its site Berlin (``child``), the sibling Initech's site Munich and
the foreign Dealer B's site Paris.  Out of scope is 404 — like an id that does not
exist — never 403; a visible agent the caller may not change is 403; a token is
visible only where the caller manages agents.  Methods not listed answer 405, and
every answer carries the CSP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django.test import Client
from fleetroom.agents.models import EnrollmentToken
from fleetroom.agents.services import do_create_enrollment_token
from fleetroom.core.middleware import CSP
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM

from server.tests.test_agents_ui_support import (
    ACTORS,
    AGENT_TENANT,
    MANAGES,
    RELATIONS,
    SEES,
    UiWorld,
    build_world,
)
from server.tests.test_api_support import bearer, issue

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    """One operation: where, how, and what it needs."""

    path: str
    """With ``{agent}``, ``{node}`` or ``{token}`` for the object."""
    method: str
    needs: str
    """``view`` (view_fleet on the object), ``manage`` (view_fleet, else 404; and
    manage_agents, else 403), ``manage_token`` (manage_agents on the token's tenant,
    else 404), ``manage_tenant`` (the tenant in the body: 404 invisible, 403 visible
    without manage_agents)."""
    ok: int
    body: dict[str, object] | None = None


ROUTES: dict[str, Route] = {
    "list_agents": Route("/api/v1/agents?tenant={node}", "GET", "view", 200),
    "get_agent": Route("/api/v1/agents/{agent}", "GET", "view", 200),
    "list_agent_commands": Route("/api/v1/agents/{agent}/commands", "GET", "view", 200),
    "issue_agent_command": Route("/api/v1/agents/{agent}/commands", "POST", "manage", 201,
                                 {"kind": "diagnostics"}),
    "set_agent_schedule": Route("/api/v1/agents/{agent}/schedule", "PATCH", "manage", 200,
                                {"status_poll_s": 600}),
    "suspend_agent": Route("/api/v1/agents/{agent}/suspend", "POST", "manage", 200),
    "unsuspend_agent": Route("/api/v1/agents/{agent}/unsuspend", "POST", "manage", 200),
    "revoke_agent": Route("/api/v1/agents/{agent}/revoke", "POST", "manage", 200),
    "reenroll_agent": Route("/api/v1/agents/{agent}/reenroll", "POST", "manage", 201, {}),
    "list_enrollment_tokens": Route("/api/v1/enrollment-tokens?tenant={node}", "GET",
                                    "view", 200),
    "create_enrollment_token": Route("/api/v1/enrollment-tokens", "POST", "manage_tenant",
                                     201, {"tenant": "{node}"}),
    "revoke_enrollment_token": Route("/api/v1/enrollment-tokens/{token}", "DELETE",
                                     "manage_token", 204),
}
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ORDER = ("admin", "viewer", "nobody", "tech")


def expected(route: Route, actor: str, relation: str) -> int:
    """What ``actor`` gets for an object (or tenant) in ``relation`` to Acme."""
    if route.needs == "manage_token":
        return route.ok if relation in MANAGES[actor] else 404
    if relation not in SEES[actor]:
        return 404
    if route.needs in ("manage", "manage_tenant") and relation not in MANAGES[actor]:
        return 403
    return route.ok


def url(route: Route, w: UiWorld, relation: str, tokens: dict[str, EnrollmentToken]) -> str:
    return route.path.format(agent=w.agent(relation).public_id,
                             node=w.t[AGENT_TENANT[relation]].pk,
                             token=tokens[relation].pk)


def body(route: Route, w: UiWorld, relation: str) -> str | None:
    if route.body is None:
        return None
    filled = {k: (w.t[AGENT_TENANT[relation]].pk if v == "{node}" else v)
              for k, v in route.body.items()}
    return json.dumps(filled)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_every_operation_is_listed():
    from fleetroom.api.v1 import agents as module

    ops = {name for name in dir(module) if name in ROUTES}
    assert ops == set(ROUTES)


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_route(name):
    route = ROUTES[name]
    w = build_world()
    tokens = {r: do_create_enrollment_token(w.t[AGENT_TENANT[r]], acting_user=SYSTEM)[0]
              for r in RELATIONS}
    bearers = {who: bearer(issue(w.user(who), name=who)) for who in ACTORS}
    client = Client()

    for relation in RELATIONS:
        path = url(route, w, relation, tokens)
        data = body(route, w, relation)
        kwargs = {"data": data, "content_type": "application/json"} if data else {}
        anonymous = client.generic(route.method, path, **kwargs)
        assert anonymous.status_code == 401, (relation, anonymous.status_code)
        assert anonymous["Content-Security-Policy"] == CSP
        for who in ORDER:
            before = AuditEvent.objects.count()
            response = client.generic(route.method, path, headers=bearers[who], **kwargs)
            want = expected(route, who, relation)
            assert response.status_code == want, (who, relation, response.status_code,
                                                  response.content[:300])
            assert response["Content-Security-Policy"] == CSP
            if want >= 400:
                assert response.json()["code"] in ("not_found", "permission_denied")
                if route.method != "GET":
                    assert AuditEvent.objects.count() == before  # a refusal writes nothing
            elif route.method != "GET" and name != "unsuspend_agent":
                assert AuditEvent.objects.count() > before

    # Methods the path does not take.
    path = url(route, w, "own", tokens).split("?")[0]
    taken = {r.method for r in ROUTES.values()
             if r.path.split("?")[0] == route.path.split("?")[0]}
    for method in ALL_METHODS:
        if method not in taken:
            response = client.generic(method, path, headers=bearers["tech"])
            assert response.status_code == 405, (method, response.status_code)
            assert response["Content-Security-Policy"] == CSP


def test_lists_hold_only_what_the_caller_may_see():
    """The unfiltered lists: agents by view scope, tokens only where agents are managed."""
    w = build_world()
    tokens = {r: do_create_enrollment_token(w.t[AGENT_TENANT[r]], acting_user=SYSTEM)[0]
              for r in RELATIONS}
    client = Client()
    for who in ACTORS:
        auth = bearer(issue(w.user(who), name=who))
        agents = client.get("/api/v1/agents", headers=auth).json()
        assert {a["id"] for a in agents["items"]} == {w.agent(r).public_id
                                                       for r in SEES[who]}, who
        assert agents["count"] == len(SEES[who])
        listed = client.get("/api/v1/enrollment-tokens", headers=auth).json()
        mine = {t["id"] for t in listed["items"]}
        # Each FakeAgent enrolled with a token of its own tenant too.
        assert {tokens[r].pk for r in MANAGES[who]} <= mine
        assert not mine & {tokens[r].pk for r in RELATIONS if r not in MANAGES[who]}
        assert {t["tenant"]["id"] for t in listed["items"]} <= {
            w.t[AGENT_TENANT[r]].pk for r in MANAGES[who]}

"""Route matrix of the agent protocol (``fleetroom.agents.urls_protocol``).

Agents are not browsers: these routes take POST only, need no CSRF token, never
set a session cookie, and grant nothing for a logged-in browser session — the
only credentials are an enrollment token (``enroll``) or the envelope's signature
(``messages``).  For every route and every caller (anonymous, a logged-in
administrator of the agent's customer) the matrix says what an unauthenticated
request gets (a dealer's session would meet the MFA-setup gate first, which is the
accounts app's business and grants nothing either); also checked: other methods
(405), the wrong content type (415), a missing length (411), the security headers.
Every pattern of the module must be listed in :data:`ROUTES` (the project-wide
``test_route_matrix`` checks that too).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import reverse
from fleetroom.accounts.testing import make_user
from fleetroom.agents import urls_protocol
from fleetroom.agents.models import Agent, ReceivedItem
from fleetroom.core.middleware import CSP
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.services import do_grant_membership
from fleetroom_protocol.envelope import SERVER, seal
from fleetroom_protocol.messages import CONTENT_TYPE, PATH_ENROLL, PATH_MESSAGES, PATH_PROFILES
from nacl.signing import SigningKey

from server.tests.test_agents_support import (
    FakeAgent,
    clean_limits_fixture,  # noqa: F401 (fixture)
    enroll_request,
    make_tree,
)

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    """The path, the content type it takes, and what an unauthenticated POST gets."""

    path: str
    content_type: str
    unauthenticated: int


ROUTES: dict[str, Route] = {
    "enroll": Route(PATH_ENROLL, "application/json", 403),
    "messages": Route(PATH_MESSAGES, CONTENT_TYPE, 401),
    "profiles_latest": Route(PATH_PROFILES, CONTENT_TYPE, 401),
}
CALLERS = ("anonymous", "customer_admin")


@pytest.fixture
def world(client):
    tree = make_tree()
    agent = FakeAgent(client, tree["s1"])
    admin = make_user("dora")
    do_grant_membership(admin, tree["c1"], acting_user=SYSTEM, role="customer_admin")
    return {"tree": tree, "agent": agent, "admin": admin}


def client_for(world, caller: str) -> Client:
    c = Client(enforce_csrf_checks=True)
    if caller == "customer_admin":
        c.force_login(world["admin"])
    return c


def unauthenticated_body(name: str, world) -> bytes:
    """A well-formed request without valid credentials."""
    if name == "enroll":
        return enroll_request("fre1_" + "z" * 43)[0].model_dump_json().encode()
    # Claims to be the real agent, signed with another key.
    return seal(b'{"items":[]}', signing_key=SigningKey.generate(),
                sender=world["agent"].agent_id, to=SERVER, ctr=99, kind="batch")


def headers_ok(response, *, anonymous: bool = True) -> None:
    """Security headers; no session or CSRF cookie is ever started here (a browser's
    existing session is only refreshed by the session middleware, as on every page)."""
    assert response.headers.get("Content-Security-Policy") == CSP
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert "csrftoken" not in response.cookies
    if anonymous:
        assert "sessionid" not in response.cookies


def test_every_route_is_in_the_matrix():
    names = {p.name for p in urls_protocol.urlpatterns}
    assert names == set(ROUTES)
    for name, route in ROUTES.items():
        assert reverse(f"agent_protocol:{name}") == route.path


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("name", sorted(ROUTES))
def test_unauthenticated_post_needs_no_csrf_and_gets_nothing(world, name, caller):
    route = ROUTES[name]
    response = client_for(world, caller).post(route.path, data=unauthenticated_body(name, world),
                                              content_type=route.content_type)
    assert response.status_code == route.unauthenticated
    headers_ok(response, anonymous=caller == "anonymous")
    if name == "messages":
        assert response.content == b""
        assert ReceivedItem.objects.count() == 0
    else:
        assert Agent.objects.count() == 1  # only the one the fixture enrolled


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
@pytest.mark.parametrize("name", sorted(ROUTES))
def test_other_methods_are_not_allowed(world, name, method):
    response = getattr(client_for(world, "customer_admin"), method)(ROUTES[name].path)
    assert response.status_code == 405
    headers_ok(response, anonymous=False)


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_wrong_content_type_and_missing_length(world, name):
    route = ROUTES[name]
    c = client_for(world, "anonymous")
    wrong = c.post(route.path, data=b"x", content_type="text/plain")
    assert wrong.status_code == 415
    no_length = c.post(route.path, data=unauthenticated_body(name, world),
                       content_type=route.content_type, CONTENT_LENGTH="")
    assert no_length.status_code == 411


def test_a_valid_agent_message_passes_without_csrf_or_session(world):
    agent = world["agent"]
    agent.client = client_for(world, "anonymous")
    response = agent.send(agent.poll())
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE
    headers_ok(response)
    assert agent.reply(response).status == "ok"

"""Helpers shared by the agents page and API tests (this module holds no tests).

The world is built through the real services and the real protocol: tenants and
memberships through the tenancy services, agents enrolled with real enrollment
tokens through the HTTP enroll endpoint and reporting their state in signed
envelopes (``FakeAgent``), gaps and command results sent as outbox items and
processed by the real normalisation.  Expected values in the tests come from what
is sent here (:data:`STATES`), never from the pages' own output.

Vantage points (like the fleet matrix): Acme (``own``, a customer with sites),
its site Berlin (``child``), the sibling customer Initech's site Munich
(``sibling``) and the foreign Dealer B's Globex site Paris (``foreign``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from html.parser import HTMLParser
from typing import Any

from django.test import Client, TestCase
from django.utils import timezone
from fleetroom.accounts.models import User
from fleetroom.accounts.testing import enable_totp, make_user
from fleetroom.agents.models import Agent
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.models import Tenant
from fleetroom.tenancy.services import do_create_tenant, do_grant_membership
from fleetroom_protocol.messages import AgentState, CommandResult

from server.tests.test_agents_support import FakeAgent, clear_limits

RELATIONS = ("own", "child", "sibling", "foreign")
AGENT_TENANT = {"own": "acme", "child": "berlin", "sibling": "munich", "foreign": "paris"}
TOKEN_TENANT = AGENT_TENANT
ACTORS = ("admin", "viewer", "tech", "nobody")
USER_OF = {"admin": "acme_admin", "viewer": "acme_viewer", "tech": "tech", "nobody": "nobody"}
SEES = {"admin": {"own", "child"}, "viewer": {"own", "child"},
        "tech": {"own", "child", "sibling"}, "nobody": set()}
"""Where each actor holds view_fleet."""
MANAGES = {"admin": set(), "viewer": set(), "tech": {"own", "child", "sibling"},
           "nobody": set()}
"""Where each actor holds manage_agents (the dealer technician, on all of Dealer A)."""

STATES: dict[str, AgentState] = {
    "own": AgentState(version="1.2.0", hostname="acme-gw", platform="linux",
                      queue_items=0, queue_bytes=0, devices=3),
    "child": AgentState(version="1.3.0", hostname="berlin-pc", platform="windows",
                        queue_items=1234, queue_bytes=2_500_000,
                        oldest_unsent_at=datetime(2025, 3, 1, 6, 0, tzinfo=UTC),
                        last_error="server answered 503", devices=17,
                        weak_crypto_devices=["10.1.0.5 (SNMPv2c)", "10.1.0.9 (v3 MD5/DES)"],
                        schedule_version=1, transport="https"),
    "sibling": AgentState(version="1.1.0", hostname="munich-pc", queue_items=5),
    "foreign": AgentState(version="0.9.0", hostname="paris-pc", queue_items=7),
}
SKEW = {"child": timedelta(minutes=12), "own": timedelta(seconds=20)}
"""Clock offsets the agents seal their envelopes with (Berlin's is flagged)."""


@dataclass
class UiWorld:
    """Everything a test needs by name."""

    t: dict[str, Tenant] = field(default_factory=dict)
    u: dict[str, User] = field(default_factory=dict)
    fake: dict[str, FakeAgent] = field(default_factory=dict)
    """Enrolled agents by relation (own/child/sibling/foreign)."""

    def agent(self, relation: str) -> Agent:
        """The server's row of an agent (fresh)."""
        return self.fake[relation].row

    def user(self, actor: str) -> User:
        """The user behind an actor name of :data:`ACTORS`."""
        return self.u[USER_OF[actor]]


def build_tree(w: UiWorld) -> None:
    """The tenant tree and one user per vantage point."""

    def add(key: str, parent: str | None, kind: str, name: str) -> None:
        w.t[key] = do_create_tenant(w.t.get(parent) if parent else None, kind, name, SYSTEM)

    add("op", None, "operator", "Platform")
    add("dealer_a", "op", "dealer", "Dealer A")
    add("acme", "dealer_a", "customer", "Acme")
    add("berlin", "acme", "site", "Berlin")
    add("hamburg", "acme", "site", "Hamburg")
    add("initech", "dealer_a", "customer", "Initech")
    add("munich", "initech", "site", "Munich")
    add("dealer_b", "op", "dealer", "Dealer B")
    add("globex", "dealer_b", "customer", "Globex")
    add("paris", "globex", "site", "Paris")

    def member(key: str, tenant: str, role: str, *, mfa: bool = False, **kw: Any) -> None:
        w.u[key] = make_user(key)
        do_grant_membership(w.u[key], w.t[tenant], role=role, acting_user=SYSTEM, **kw)
        if mfa:
            enable_totp(w.u[key])

    member("tech", "dealer_a", "dealer_technician", mfa=True)
    member("acme_admin", "acme", "customer_admin")
    member("acme_viewer", "acme", "customer_viewer")
    member("berlin_viewer", "acme", "customer_viewer", sites=[w.t["berlin"]])
    w.u["nobody"] = make_user("nobody")


def report_state(agent: FakeAgent, state: AgentState, *, skew: timedelta = timedelta(0),
                 ) -> None:
    """The agent polls once with ``state`` (its clock ``skew`` off the server's)."""
    now = timezone.now() + skew
    envelope = agent.seal(json.dumps({"state": state.model_dump(mode="json")}).encode(),
                          kind="poll", now=now)
    response = agent.send(envelope)
    assert response.status_code == 200, response.content


def send_items(agent: FakeAgent, stream: str, payloads: list[Any],
               state: AgentState | None = None) -> None:
    """One batch of outbox items, stored and then normalised by the real processing (the
    task queued after commit runs inline, as the test settings' worker does)."""
    state = state or agent.row.state_model()  # the state it last reported, unchanged
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = agent.send(agent.batch(agent.items(stream, payloads), state=state))
    assert response.status_code == 200, response.content


def gap_record(count: int, first: int, last: int, reason: str = "disk_budget") -> dict[str, Any]:
    """A gap record as the agent's outbox writes it."""
    return {"type": "gap", "stream": "readings", "reason": reason, "count": count,
            "first_seq": first, "last_seq": last, "ranges": [[first, last]]}


def command_result(command_id: str, outcome: str, detail: str) -> dict[str, Any]:
    """A command result as the agent reports it."""
    return CommandResult(command_id=command_id, outcome=outcome,  # type: ignore[arg-type]
                         detail=detail).model_dump(mode="json", by_alias=True)


def build_world(client: Client | None = None, *, with_state: bool = True) -> UiWorld:
    """The tree, the users, and one enrolled agent per relation that reported its state."""
    clear_limits()
    w = UiWorld()
    build_tree(w)
    client = client or Client()
    for i, relation in enumerate(RELATIONS):
        w.fake[relation] = FakeAgent(client, w.t[AGENT_TENANT[relation]],
                                     hostname=STATES[relation].hostname,
                                     ip=f"198.51.100.{10 + i}")
        if with_state:
            report_state(w.fake[relation], STATES[relation],
                         skew=SKEW.get(relation, timedelta(0)))
    return w


def client_for(user: User) -> Client:
    """A logged-in browser."""
    c = Client()
    c.force_login(user)
    return c


class _Tables(HTMLParser):
    """Cell texts of every ``<table>`` row, per table class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("class") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in ("div", "br", "li") and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str, css_class: str) -> list[list[str]]:
    """The body rows (header row dropped) of the table with this class, as cell texts."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables.get(css_class, [])[1:]


def element_text(html: str, element_id: str) -> str:
    """The text of the element with this id (for one-time secrets on a page)."""
    match = re.search(rf'id="{re.escape(element_id)}"[^>]*>([^<]*)<', html)
    assert match is not None, element_id
    return unescape(match.group(1)).strip()

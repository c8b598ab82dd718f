"""Per-agent and per-tenant request limits, counted in the transaction that stores a request.

Real enrolled agents (``FakeAgent``) through the HTTP endpoint.  Window arithmetic is
checked against a fixed clock (``ratelimit.now_ts`` patched); the expected
Retry-After is computed here from that clock and the configured rate.
"""

from __future__ import annotations

import math

import pytest
from fleetroom.agents import ratelimit
from fleetroom.agents.models import RateCounter, ReceivedBatch, ReceivedItem
from fleetroom.config import AgentsConfig

from server.tests.test_agents_bundles import ask
from server.tests.test_agents_support import (
    FakeAgent,
    agent_json,
    clean_limits_fixture,  # noqa: F401 (fixture)
    tree_fixture,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.django_db

START = 1_800_000_000.0 + 17.25
"""17.25 s into a minute window."""


@pytest.fixture
def clock(monkeypatch):
    now = [START]
    monkeypatch.setattr(ratelimit, "now_ts", lambda: now[0])
    return now


def counter(scope: str, subject: str) -> RateCounter:
    return RateCounter.objects.get(scope=scope, subject=subject)


def test_limit_is_per_window_with_retry_after_to_its_end(client, tree, settings, clock):
    settings.FLEETROOM_AGENTS = AgentsConfig(agent_rate="3/m")
    agent = FakeAgent(client, tree["s1"])
    assert [agent.send(agent.poll()).status_code for _ in range(3)] == [200, 200, 200]
    limited = agent.send(agent.poll())
    assert limited.status_code == 429
    assert limited["Retry-After"] == str(math.ceil(60 - START % 60))  # 43
    assert agent.reply(limited).message
    # One row per subject, counting this window; the refused request is not stored.
    row = counter("agent", agent.agent_id)
    assert (row.window_no, row.hits) == (int(START // 60), 3)
    assert counter("tenant", str(tree["s1"].pk)).hits == 3
    clock[0] = START + 60  # the next window: the same row starts again at one
    assert agent.send(agent.poll()).status_code == 200
    row = counter("agent", agent.agent_id)
    assert (row.window_no, row.hits) == (int(START // 60) + 1, 1)
    assert RateCounter.objects.filter(scope="agent").count() == 1


def test_request_that_goes_over_while_it_is_stored_is_rolled_back(client, tree, settings,
                                                                   clock, monkeypatch):
    """Two requests pass the read-only check together; the one counted second is over
    the limit inside its storing transaction: 429, and nothing of it is kept."""
    settings.FLEETROOM_AGENTS = AgentsConfig(agent_rate="2/m")
    agent = FakeAgent(client, tree["s1"])
    assert agent.send(agent.poll()).status_code == 200
    assert agent.send(agent.poll()).status_code == 200
    seen = agent.row
    # The concurrent request's check ran before these two were counted.
    monkeypatch.setattr(ratelimit, "blocked", lambda *_args: None)
    items = agent.items("readings", [agent_json("alerts")])
    limited = agent.send(agent.batch(items))
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) == math.ceil(60 - START % 60)
    assert agent.reply(limited).acked == []
    assert (ReceivedBatch.objects.count(), ReceivedItem.objects.count()) == (0, 0)
    after = agent.row
    assert (after.replay_state, after.last_seen) == (seen.replay_state, seen.last_seen)
    assert counter("agent", agent.agent_id).hits == 2  # the increment rolled back too


def test_answers_that_store_nothing_count_too(client, tree, settings, clock):
    settings.FLEETROOM_AGENTS = AgentsConfig(agent_rate="2/m")
    agent = FakeAgent(client, tree["s1"])
    envelope = agent.batch(agent.items("readings", [agent_json("alerts")]))
    assert agent.send(envelope).status_code == 200
    repeat = agent.send(envelope)  # a transport delivering twice: answered, not stored
    assert repeat.status_code == 200
    assert ReceivedBatch.objects.count() == 1
    assert counter("agent", agent.agent_id).hits == 2
    assert agent.send(agent.poll()).status_code == 429


def test_tenant_limit_counts_every_agent_of_the_tenant(client, tree, settings, clock):
    settings.FLEETROOM_AGENTS = AgentsConfig(tenant_rate="3/m")
    a = FakeAgent(client, tree["s1"], hostname="a")
    b = FakeAgent(client, tree["s1"], hostname="b")
    assert [x.send(x.poll()).status_code for x in (a, b, a)] == [200, 200, 200]
    limited = b.send(b.poll())
    assert limited.status_code == 429
    assert b.reply(limited).message
    assert counter("tenant", str(tree["s1"].pk)).hits == 3
    assert (counter("agent", a.agent_id).hits, counter("agent", b.agent_id).hits) == (2, 1)


def test_profile_requests_and_messages_share_the_agent_counter(client, tree, settings,
                                                               clock):
    settings.FLEETROOM_AGENTS = AgentsConfig(agent_rate="2/m")
    agent = FakeAgent(client, tree["s1"])
    assert ask(agent, have=None).status_code in (200, 204)
    assert agent.send(agent.poll()).status_code == 200
    assert agent.send(agent.poll()).status_code == 429
    assert counter("agent", agent.agent_id).hits == 2


def test_bad_traffic_never_touches_the_agent_counters(client, tree, settings, clock):
    settings.FLEETROOM_AGENTS = AgentsConfig(source_failure_rate="2/m", agent_rate="2/m")
    agent = FakeAgent(client, tree["s1"])
    forged = agent.poll()[:-3] + b"xyz"  # the signature no longer matches
    assert [agent.send(forged, ip="203.0.113.5").status_code for _ in range(2)] == [401, 401]
    assert agent.send(agent.poll(), ip="203.0.113.5").status_code == 429  # source budget
    assert not RateCounter.objects.exists()
    assert agent.send(agent.poll()).status_code == 200  # from its own address
    assert counter("agent", agent.agent_id).hits == 1

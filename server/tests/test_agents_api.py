"""The agents REST API end to end: what it lists against what the agents sent, tokens
returned once and stored hashed (and enrolling for real), commands and schedules
reaching the agent in its next signed reply, the protocol's limits, and refusals
that name their reason.  Who may do what where is in ``test_agents_api_matrix``."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from fleetroom.agents import selectors
from fleetroom.agents.models import Agent, AgentStatus, EnrollmentToken
from fleetroom.agents.services import do_suspend_agent
from fleetroom.core.scoping import SYSTEM
from fleetroom_protocol.messages import MAX_METER_READ_S, MIN_METER_READ_S, Schedule

from server.tests.test_agents_support import enroll_request, post_enroll
from server.tests.test_agents_ui_support import (
    RELATIONS,
    STATES,
    UiWorld,
    build_world,
    gap_record,
    send_items,
)
from server.tests.test_api_support import bearer, issue

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def w() -> UiWorld:
    return build_world()


class Api:
    """A client with a bearer token."""

    def __init__(self, user) -> None:
        self.client = Client()
        self.headers = bearer(issue(user, name="api test"))

    def get(self, path: str, **params):
        return self.client.get(path, params, headers=self.headers)

    def send(self, method: str, path: str, body: object = None):
        data = json.dumps(body) if body is not None else ""
        return self.client.generic(method, path, data, content_type="application/json",
                                   headers=self.headers)


@pytest.fixture
def tech(w) -> Api:
    return Api(w.user("tech"))


def test_agent_list_and_detail_carry_what_the_agents_reported(w, tech):
    send_items(w.fake["child"], "gaps", [gap_record(9, 1, 9)])
    page = tech.get("/api/v1/agents").json()
    assert page["count"] == 3
    by_id = {a["id"]: a for a in page["items"]}
    berlin = by_id[w.agent("child").public_id]
    state = STATES["child"]
    assert (berlin["hostname"], berlin["version"], berlin["queue_items"],
            berlin["queue_bytes"], berlin["weak_crypto_devices"], berlin["gaps"]) == (
        state.hostname, state.version, state.queue_items, state.queue_bytes,
        len(state.weak_crypto_devices), 1)
    assert berlin["tenant"] == {"id": w.t["berlin"].pk, "kind": "site", "name": "Berlin"}
    assert berlin["status"] == "active"
    assert berlin["overdue"] is False
    assert berlin["oldest_unsent_at"] == "2025-03-01T06:00:00Z"
    detail = tech.get(f"/api/v1/agents/{w.agent('child').public_id}").json()
    assert detail["state"]["last_error"] == state.last_error
    assert detail["state"]["weak_crypto_devices"] == state.weak_crypto_devices
    assert detail["missing_items"] == 9
    assert detail["schedule"] == Schedule(version=1).model_dump()
    # The agent sent its last batch on time: the 12-minute skew of its poll is history.
    assert abs(detail["clock_skew_s"]) < 60
    assert detail["clock_skew_flagged"] is False
    acme = by_id[w.agent("own").public_id]
    assert acme["clock_skew_flagged"] is False
    assert 0 < acme["clock_skew_s"] < 60


def test_agent_list_filters(w, tech):
    do_suspend_agent(w.agent("sibling"), acting_user=SYSTEM)
    Agent.objects.filter(pk=w.agent("child").pk).update(
        silent_after=timezone.now() - timedelta(minutes=1))  # time passed
    ids = {r: w.agent(r).public_id for r in RELATIONS}

    def listed(**params) -> set[str]:
        response = tech.get("/api/v1/agents", **params)
        assert response.status_code == 200, response.content
        return {a["id"] for a in response.json()["items"]}

    assert listed(status="suspended") == {ids["sibling"]}
    assert listed(overdue="true") == {ids["child"]}
    assert listed(overdue="false") == {ids["own"], ids["sibling"]}
    assert listed(tenant=w.t["acme"].pk) == {ids["own"], ids["child"]}
    assert listed(tenant=w.t["berlin"].pk) == {ids["child"]}
    assert listed(q="munich") == {ids["sibling"]}
    assert tech.get("/api/v1/agents", tenant=w.t["paris"].pk).status_code == 404
    assert tech.get("/api/v1/agents", status="gone").status_code == 422


def test_token_is_returned_once_stored_hashed_and_enrolls(w, tech):
    response = tech.send("POST", "/api/v1/enrollment-tokens",
                         {"tenant": w.t["munich"].pk, "label": "Munich", "max_uses": 2,
                          "expires_in_hours": 48, "source_network": "198.51.100.0/24"})
    assert response.status_code == 201, response.content
    body = response.json()
    clear = body["token"]
    assert body["command"] == (f"fleetroom-agent enroll --server http://127.0.0.1:8000 "
                               f"--token {clear}")
    token = EnrollmentToken.objects.get(pk=body["id"])
    assert token.token_hash == hashlib.sha256(clear.encode()).hexdigest()
    assert body["prefix"] == token.prefix == clear[:12]
    assert (body["max_uses"], body["uses"], body["state"], body["source_network"]) == (
        2, 0, "usable", "198.51.100.0/24")
    lifetime = token.expires_at - token.created_at
    assert timedelta(hours=47, minutes=59) < lifetime <= timedelta(hours=48)
    listed = tech.get("/api/v1/enrollment-tokens", tenant=w.t["munich"].pk)
    assert clear not in listed.content.decode()
    (row,) = [t for t in listed.json()["items"] if t["id"] == token.pk]
    assert "token" not in row
    req, _key = enroll_request(clear, hostname="munich-2")
    answer = post_enroll(Client(), req, ip="198.51.100.4")
    assert answer.status_code == 201
    agent = tech.get(f"/api/v1/agents/{answer.json()['agent_id']}").json()
    assert agent["hostname"] == "munich-2"
    assert agent["tenant"]["id"] == w.t["munich"].pk
    assert tech.send("DELETE", f"/api/v1/enrollment-tokens/{token.pk}").status_code == 204
    usable = {t["id"] for t in tech.get("/api/v1/enrollment-tokens", usable="true").json()[
        "items"]}
    spent = {t["id"]: t["state"] for t in tech.get("/api/v1/enrollment-tokens",
                                                   usable="false").json()["items"]}
    assert token.pk not in usable
    assert spent[token.pk] == "revoked"
    token.refresh_from_db()
    assert token.revoked_at is not None
    req2, _key2 = enroll_request(clear, hostname="munich-3")
    assert post_enroll(Client(), req2, ip="198.51.100.5").status_code == 403


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"tenant": "dealer_a"}, 422, "kind"),  # agents belong to a site or customer
    ({"tenant": "berlin", "source_network": "10.1.2.3/24"}, 422, "network"),
    ({"tenant": "berlin", "max_uses": 0}, 422, "validation_error"),
    ({"tenant": "berlin", "expires_in_hours": 91 * 24}, 422, "validation_error"),
    ({"tenant": "berlin", "colour": "red"}, 422, "validation_error"),
    ({"tenant": "paris"}, 404, "not_found"),  # Dealer B's: as if it did not exist
])
def test_token_refusals_name_their_reason(w, tech, body, status, code):
    before = EnrollmentToken.objects.count()
    response = tech.send("POST", "/api/v1/enrollment-tokens",
                         {**body, "tenant": w.t[str(body["tenant"])].pk})
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert EnrollmentToken.objects.count() == before


def test_commands_reach_the_agent_in_its_next_signed_reply(w, tech):
    agent = w.agent("child")
    base = f"/api/v1/agents/{agent.public_id}/commands"
    first = tech.send("POST", base, {"kind": "read-device", "target": "10.1.0.5"})
    assert first.status_code == 201, first.content
    second = tech.send("POST", base, {"kind": "update-profiles", "expires_in_s": 600})
    assert second.status_code == 201
    stored = list(selectors.commands(w.user("tech"), agent=agent))
    assert [(c.command_id, c.kind, c.args) for c in stored] == [
        (second.json()["id"], "update-profiles", {}),
        (first.json()["id"], "read-device", {"target": "10.1.0.5"})]
    assert stored[0].expires_at - stored[0].issued_at == timedelta(seconds=600)
    fake = w.fake["child"]
    reply = fake.reply(fake.send(fake.poll()))
    assert {(c.id, c.kind) for c in reply.commands} == {
        (first.json()["id"], "read-device"), (second.json()["id"], "update-profiles")}
    listed = tech.get(base).json()
    assert [c["status"] for c in listed["items"]] == ["delivered", "delivered"]
    # Shape errors: a target where none belongs, none where one must be, unknown kinds.
    for bad in ({"kind": "read-device"}, {"kind": "scan-now", "target": "10.1.0.5"},
                {"kind": "set-schedule"}, {"kind": "format-disk"},
                {"kind": "scan-now", "expires_in_s": 30}):
        response = tech.send("POST", base, bad)
        assert response.status_code == 422, bad
        assert response.json()["code"] == "validation_error"
    assert len(selectors.commands(w.user("tech"), agent=agent)) == 2
    # A suspended agent gets none: 409 with the reason.
    tech.send("POST", f"/api/v1/agents/{agent.public_id}/suspend")
    refused = tech.send("POST", base, {"kind": "scan-now"})
    assert refused.status_code == 409
    assert refused.json()["code"] == "inactive"


def test_schedule_changes_within_the_protocol_limits(w, tech):
    agent = w.agent("own")
    url = f"/api/v1/agents/{agent.public_id}/schedule"
    for bad in ({"status_poll_s": 59}, {"meter_read_s": MIN_METER_READ_S - 1},
                {"meter_read_s": MAX_METER_READ_S + 1}, {"profile_check": "25:00"},
                {"jitter": 0.9}, {"status_pol_s": 600}, {"version": 99}):
        response = tech.send("PATCH", url, bad)
        assert response.status_code == 422, (bad, response.content)
    assert w.agent("own").schedule_version == 1
    response = tech.send("PATCH", url, {"meter_read_s": MIN_METER_READ_S,
                                        "month_end_read": False, "profile_check": "05:00"})
    assert response.status_code == 200, response.content
    expected = Schedule(version=2, meter_read_s=MIN_METER_READ_S, month_end_read=False,
                        profile_check="05:00")
    assert response.json() == expected.model_dump()
    assert w.agent("own").schedule_model() == expected
    fake = w.fake["own"]
    reply = fake.reply(fake.send(fake.poll()))
    assert reply.schedule == expected
    # The same values again change nothing (no new version for the agent to fetch).
    again = tech.send("PATCH", url, {"meter_read_s": MIN_METER_READ_S})
    assert again.json()["version"] == 2


def test_suspend_unsuspend_revoke_and_reenroll(w, tech):
    agent = w.agent("own")
    base = f"/api/v1/agents/{agent.public_id}"
    suspended = tech.send("POST", f"{base}/suspend")
    assert suspended.status_code == 200
    assert (suspended.json()["status"], suspended.json()["status_reason"]) == (
        "suspended", "admin")
    assert w.agent("own").status == AgentStatus.SUSPENDED
    assert tech.send("POST", f"{base}/unsuspend").json()["status"] == "active"
    token = tech.send("POST", f"{base}/reenroll", {"source_network": "198.51.100.0/24"})
    assert token.status_code == 201
    assert token.json()["for_agent"] == agent.public_id
    assert token.json()["max_uses"] == 1
    req, _key = enroll_request(token.json()["token"], hostname="acme-gw")
    answer = post_enroll(Client(), req, ip="198.51.100.8")
    assert answer.status_code == 201
    assert answer.json()["agent_id"] == agent.public_id
    assert w.agent("own").key_id != agent.key_id
    assert tech.send("POST", f"{base}/revoke").json()["status"] == "revoked"
    for action in ("unsuspend", "suspend"):
        refused = tech.send("POST", f"{base}/{action}")
        assert refused.status_code == 409
        assert refused.json()["code"] == "revoked"
    refused = tech.send("POST", f"{base}/reenroll", {})
    assert refused.status_code == 409
    assert refused.json()["code"] == "revoked"


def test_unknown_and_malformed_ids(w, tech):
    assert tech.get("/api/v1/agents/00000000-0000-4000-8000-000000000000").status_code == 404
    assert tech.get("/api/v1/agents/not-a-uuid").status_code == 422
    upper = w.agent("own").public_id.upper()
    assert tech.get(f"/api/v1/agents/{upper}").status_code == 422
    assert tech.send("DELETE", "/api/v1/enrollment-tokens/999999").status_code == 404

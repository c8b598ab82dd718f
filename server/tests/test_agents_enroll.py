"""Enrollment tokens and enrollment: stored hashed, shown once, expiry, maximum uses,
source network, the reuse alert, proof of key possession, server keys on disk."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from fleetroom.accounts.testing import make_user
from fleetroom.agents import keys as server_keys_module
from fleetroom.agents.keys import keys_path, server_keys
from fleetroom.agents.models import (
    Agent,
    AgentStatus,
    EnrollmentToken,
    SecurityEvent,
    SecurityEventKind,
)
from fleetroom.agents.selectors import enrollment_tokens, security_events
from fleetroom.agents.services import (
    do_acknowledge_security_event,
    do_create_enrollment_token,
    do_revoke_agent,
    do_revoke_enrollment_token,
    token_state,
)
from fleetroom.config import AgentsConfig
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.services import do_grant_membership
from fleetroom_protocol.keys import encode_key
from fleetroom_protocol.messages import EnrollResponse, Schedule
from nacl.signing import SigningKey

from server.tests.test_agents_support import (
    SOURCE_IP,
    clean_limits_fixture,  # noqa: F401 (fixture)
    enroll_request,
    new_token,
    post_enroll,
    tree_fixture,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.django_db


def error(response) -> str:
    return json.loads(response.content)["error"]


# --- tokens -------------------------------------------------------------------------


def test_token_is_stored_only_as_a_hash_and_expires_in_24_hours(tree):
    before = timezone.now()
    token, clear = do_create_enrollment_token(tree["s1"], acting_user=SYSTEM, label="Berlin")
    assert clear.startswith("fre1_")
    assert len(clear) >= 40
    assert token.token_hash == hashlib.sha256(clear.encode()).hexdigest()
    assert token.prefix == clear[:12]
    row = EnrollmentToken.objects.filter(pk=token.pk).values().get()
    assert not any(clear in str(v) for v in row.values())
    assert timedelta(hours=24) <= token.expires_at - before <= timedelta(hours=24, seconds=5)
    assert (token.max_uses, token.uses, token_state(token)) == (1, 0, "usable")
    event = AuditEvent.objects.get(action="agent_token.created")
    assert event.data["prefix"] == token.prefix
    assert clear not in json.dumps(event.data)


def test_token_options_are_checked(tree):
    with pytest.raises(ValidationError):
        do_create_enrollment_token(tree["d1"], acting_user=SYSTEM)  # a dealer: no readings
    with pytest.raises(ValidationError):
        do_create_enrollment_token(tree["s1"], acting_user=SYSTEM, source_network="10.1.2.3/24")
    with pytest.raises(ValidationError):
        do_create_enrollment_token(tree["s1"], acting_user=SYSTEM, max_uses=0)
    with pytest.raises(ValidationError):
        do_create_enrollment_token(tree["s1"], acting_user=SYSTEM,
                                   expires_at=timezone.now() + timedelta(days=400))
    token, _ = do_create_enrollment_token(tree["s1"], acting_user=SYSTEM,
                                          source_network=" 10.1.0.0/16 ")
    assert token.source_network == "10.1.0.0/16"


def test_only_agent_managers_create_tokens_and_see_them(tree):
    viewer = make_user("vera")
    do_grant_membership(viewer, tree["c1"], acting_user=SYSTEM, role="customer_admin")
    tech = make_user("tom")
    do_grant_membership(tech, tree["d1"], acting_user=SYSTEM, role="dealer_technician")
    with pytest.raises(PermissionDenied):
        do_create_enrollment_token(tree["s1"], acting_user=viewer)
    token, _ = do_create_enrollment_token(tree["s1"], acting_user=tech)
    assert token.created_by == tech
    assert list(enrollment_tokens(tech)) == [token]
    assert list(enrollment_tokens(viewer)) == []
    outsider = make_user("otto")
    do_grant_membership(outsider, tree["d2"], acting_user=SYSTEM, role="dealer_admin")
    assert list(enrollment_tokens(outsider)) == []


def test_max_uses_then_spent(client, tree):
    clear = new_token(tree["s1"], max_uses=2)
    for host in ("a", "b"):
        response = post_enroll(client, enroll_request(clear, hostname=host)[0])
        assert response.status_code == 201
    assert EnrollmentToken.objects.get().uses == 2
    third = post_enroll(client, enroll_request(clear, hostname="c")[0])
    assert (third.status_code, error(third)) == (403, "spent")
    assert Agent.objects.count() == 2


@pytest.fixture
def dealer_admin(tree):
    user = make_user("alice")
    do_grant_membership(user, tree["d1"], acting_user=SYSTEM, role="dealer_admin")
    return user


def test_reusing_a_spent_token_raises_an_alert(client, tree, dealer_admin):
    clear = new_token(tree["s1"])
    assert post_enroll(client, enroll_request(clear)[0]).status_code == 201
    response = post_enroll(client, enroll_request(clear, hostname="intruder")[0],
                           ip="203.0.113.50")
    assert response.status_code == 403
    assert json.loads(response.content)["message"] == "This enrollment token has been used up."
    event = SecurityEvent.objects.get(kind=SecurityEventKind.TOKEN_REUSE)
    assert event.tenant == tree["s1"]
    assert (event.detail["reason"], event.detail["hostname"], event.source) == (
        "spent", "intruder", "203.0.113.50")
    audit_row = AuditEvent.objects.get(action="agent_token.refused")
    assert audit_row.data["reason"] == "spent"
    assert audit_row.ip == "203.0.113.50"
    assert list(security_events(dealer_admin)) == [event]
    do_acknowledge_security_event(event, acting_user=dealer_admin)
    assert list(security_events(dealer_admin)) == []
    assert list(security_events(dealer_admin, open_only=False)) == [event]
    assert AuditEvent.objects.filter(action="agent.security_event_acknowledged").count() == 1


def test_expired_and_revoked_tokens_are_refused_with_an_alert(client, tree):
    expired_row, expired = do_create_enrollment_token(tree["s1"], acting_user=SYSTEM)
    EnrollmentToken.objects.filter(pk=expired_row.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1))
    revoked_row, revoked = do_create_enrollment_token(tree["s1"], acting_user=SYSTEM)
    do_revoke_enrollment_token(revoked_row, acting_user=SYSTEM)
    assert error(post_enroll(client, enroll_request(expired)[0])) == "expired"
    assert error(post_enroll(client, enroll_request(revoked)[0])) == "revoked"
    reasons = sorted(SecurityEvent.objects.values_list("detail__reason", flat=True))
    assert reasons == ["expired", "revoked"]
    assert Agent.objects.count() == 0
    assert EnrollmentToken.objects.get(pk=expired_row.pk).uses == 0


def test_unknown_token_is_refused_without_an_alert(client, tree):
    response = post_enroll(client, enroll_request("fre1_" + "x" * 43)[0])
    assert (response.status_code, error(response)) == (403, "invalid_token")
    assert SecurityEvent.objects.count() == 0


def test_source_network(client, tree):
    clear = new_token(tree["s1"], source_network="192.0.2.0/24", max_uses=5)
    outside = post_enroll(client, enroll_request(clear)[0], ip="198.51.100.1")
    assert (outside.status_code, error(outside)) == (403, "network")
    assert SecurityEvent.objects.get().kind == SecurityEventKind.TOKEN_NETWORK
    inside = post_enroll(client, enroll_request(clear)[0], ip="192.0.2.77")
    assert inside.status_code == 201


# --- enrollment ---------------------------------------------------------------------


def test_enrollment_registers_the_keys_and_returns_the_servers(client, tree):
    clear = new_token(tree["s1"])
    req, signing = enroll_request(clear, hostname="pc-berlin")
    response = post_enroll(client, req)
    assert response.status_code == 201
    enrolled = EnrollResponse.model_validate_json(response.content)
    agent = Agent.objects.get(public_id=enrolled.agent_id)
    assert agent.signing_key == encode_key(signing.verify_key)
    assert agent.encryption_key == req.encryption_key
    assert (agent.tenant, agent.site, agent.customer) == (tree["s1"], tree["s1"], tree["c1"])
    assert (agent.hostname, agent.name, agent.version, agent.platform) == (
        "pc-berlin", "pc-berlin", "0.1.0", "linux")
    assert agent.status == AgentStatus.ACTIVE
    assert (enrolled.tenant, enrolled.site) == ("Berlin", "Berlin")
    keys = server_keys()
    assert enrolled.server_signing_key == encode_key(keys.verify_key)
    assert enrolled.server_encryption_key == encode_key(keys.public_key)
    assert enrolled.schedule == Schedule(version=1)
    assert agent.silent_after is not None
    assert AuditEvent.objects.get(action="agent.enrolled").ip == SOURCE_IP


def test_bad_proof_is_refused_and_the_token_stays_usable(client, tree):
    clear = new_token(tree["s1"])
    forged, _ = enroll_request(clear, proof_key=SigningKey.generate())
    response = post_enroll(client, forged)
    assert (response.status_code, error(response)) == (400, "bad_proof")
    assert EnrollmentToken.objects.get().uses == 0
    assert post_enroll(client, enroll_request(clear)[0]).status_code == 201


def test_a_key_cannot_be_enrolled_twice(client, tree):
    clear = new_token(tree["s1"], max_uses=3)
    req, signing = enroll_request(clear)
    assert post_enroll(client, req).status_code == 201
    again, _ = enroll_request(clear, signing=signing)
    response = post_enroll(client, again)
    assert (response.status_code, error(response)) == (409, "key_in_use")


def test_malformed_requests_get_clear_json_errors(client, tree):
    response = post_enroll(client, {"token": "short"})
    assert response.status_code == 400
    body = json.loads(response.content)
    assert body["error"] == "invalid_request"
    assert "signing_key" in body["message"]
    assert "token" in body["message"]
    wrong_type = client.post("/agent/v1/enroll", data="x", content_type="text/plain")
    assert wrong_type.status_code == 415
    assert client.get("/agent/v1/enroll").status_code == 405


def test_failed_attempts_are_rate_limited_per_address(client, tree, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(enroll_failure_rate="3/h")
    for _ in range(3):
        assert post_enroll(client, enroll_request("fre1_" + "y" * 43)[0]).status_code == 403
    limited = post_enroll(client, enroll_request(new_token(tree["s1"]))[0])
    assert (limited.status_code, error(limited)) == (429, "rate_limited")
    assert int(limited["Retry-After"]) >= 1
    other = post_enroll(client, enroll_request(new_token(tree["s1"]))[0], ip="192.0.2.1")
    assert other.status_code == 201


def test_revoked_agent_cannot_use_an_old_reenroll_token(client, tree):
    clear = new_token(tree["s1"])
    enrolled = EnrollResponse.model_validate_json(
        post_enroll(client, enroll_request(clear)[0]).content)
    agent = Agent.objects.get(public_id=enrolled.agent_id)
    from fleetroom.agents.services import do_reenroll_agent

    token_row, reenroll = do_reenroll_agent(agent, acting_user=SYSTEM)
    do_revoke_agent(agent, acting_user=SYSTEM)
    token_row.refresh_from_db()
    assert token_row.revoked_at is not None
    response = post_enroll(client, enroll_request(reenroll)[0])
    assert (response.status_code, error(response)) == (403, "revoked")


def test_server_keys_are_made_once_with_mode_0600(tmp_path, settings):
    settings.DATA_DIR = tmp_path
    server_keys_module._cache.clear()
    try:
        first = server_keys()
        path = keys_path()
        assert path.parent == tmp_path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        server_keys_module._cache.clear()
        again = server_keys()
        assert bytes(again.signing_key) == bytes(first.signing_key)
        assert bytes(again.encryption_key) == bytes(first.encryption_key)
        path.chmod(0o644)
        server_keys_module._cache.clear()
        with pytest.raises(server_keys_module.ServerKeyError, match="chmod 600"):
            server_keys()
    finally:
        server_keys_module._cache.clear()


def test_agent_token_command_prints_a_token_that_enrolls(client, tree):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("agent_token", tenant="Platform/Dealer One/Acme/Berlin", uses=2, json=True,
                 stdout=out)
    printed = json.loads(out.getvalue())
    assert printed["tenant_id"] == tree["s1"].pk
    assert printed["max_uses"] == 2
    response = post_enroll(client, enroll_request(printed["token"])[0])
    assert response.status_code == 201
    assert Agent.objects.get().tenant == tree["s1"]
    assert AuditEvent.objects.filter(action="agent_token.created").count() == 1

"""Authentication and policy: replays, suspension after exactly five validly signed
violations (never from bad signatures), per-source limits, duplicates delivered by
a transport, revocation, re-enrollment, and commands delivered once with results."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from fleetroom.agents.models import (
    AgentCommand,
    AgentStatus,
    CommandStatus,
    ReceivedBatch,
    ReceivedItem,
    SecurityEvent,
    SecurityEventKind,
    StatusReason,
    Violation,
)
from fleetroom.agents.processing import do_process_batch
from fleetroom.agents.receive import push_commands, receive_envelope
from fleetroom.agents.services import (
    do_cancel_command,
    do_issue_command,
    do_reenroll_agent,
    do_revoke_agent,
    do_suspend_agent,
    do_unsuspend_agent,
)
from fleetroom.config import AgentsConfig
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom_protocol.envelope import SERVER, split, verify
from fleetroom_protocol.messages import EnrollResponse, Reply
from nacl.signing import SigningKey

from server.tests.test_agents_support import (
    FakeAgent,
    agent_json,
    clean_limits_fixture,  # noqa: F401 (fixture)
    enroll_request,
    post_enroll,
    tree_fixture,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(client, tree):
    return FakeAgent(client, tree["s1"])


def violations(agent: FakeAgent) -> list[str]:
    return list(AuditEvent.objects.filter(action="agent.policy_violation",
                                          target_id=str(agent.row.pk))
                .order_by("seq").values_list("data__violation", flat=True))


# --- replay -----------------------------------------------------------------------------


def test_replayed_counter_is_refused_and_counted(agent):
    first = agent.poll(ctr=10)
    assert agent.send(first).status_code == 200
    reused = agent.batch(agent.items("readings", [agent_json("alerts")]), ctr=10)
    response = agent.send(reused)
    assert response.status_code == 403
    reply = agent.reply(response, reply_to=10)
    assert reply.status == "ok"
    assert reply.acked == []
    assert reply.message == str(Violation.REPLAYED.label)
    assert ReceivedItem.objects.count() == 0
    row = agent.row
    assert (row.policy_violations, row.last_violation) == (1, Violation.REPLAYED)
    assert violations(agent) == ["replayed"]
    assert SecurityEvent.objects.filter(kind=SecurityEventKind.POLICY_VIOLATION,
                                        agent=row).count() == 1


def test_counter_far_behind_the_window_is_too_old(agent):
    assert agent.send(agent.poll(ctr=10_000)).status_code == 200
    response = agent.send(agent.poll(ctr=10_000 - 5000))
    assert response.status_code == 403
    assert agent.row.last_violation == Violation.TOO_OLD


def test_out_of_order_counters_inside_the_window_are_fine(agent):
    for ctr in (5, 3, 4, 1):
        assert agent.send(agent.poll(ctr=ctr)).status_code == 200
    assert agent.row.policy_violations == 0


def test_identical_envelope_delivered_twice_is_answered_not_counted(agent):
    """MQTT QoS 1 or a mail relay may deliver the same bytes twice: that is no attack."""
    envelope = agent.batch(agent.items("readings", [agent_json("alerts")]))
    assert agent.send(envelope).status_code == 200
    again = agent.send(envelope)
    assert again.status_code == 200
    assert [a.last for a in agent.reply(again).acked] == [1]
    assert agent.row.policy_violations == 0
    assert ReceivedBatch.objects.count() == 1
    poll = agent.poll()
    assert agent.send(poll).status_code == 200
    assert agent.send(poll).status_code == 200
    assert agent.row.policy_violations == 0


# --- suspension ---------------------------------------------------------------------


def test_suspended_after_exactly_five_violations(agent):
    agent.send(agent.poll(ctr=1))
    for n in range(1, 5):
        response = agent.send(agent.poll(ctr=1))
        assert response.status_code == 403
        assert agent.reply(response, reply_to=1).status == "ok"
        assert agent.row.status == AgentStatus.ACTIVE, n
    fifth = agent.send(agent.poll(ctr=1))
    assert fifth.status_code == 403
    assert agent.reply(fifth, reply_to=1).status == "suspended"
    row = agent.row
    assert (row.status, row.status_reason, row.policy_violations) == (
        AgentStatus.SUSPENDED, StatusReason.POLICY, 5)
    assert AuditEvent.objects.filter(action="agent.suspended").count() == 1
    assert SecurityEvent.objects.filter(kind=SecurityEventKind.AGENT_SUSPENDED).count() == 1
    # A correct, new message is refused too, with a signed "suspended" reply.
    later = agent.send(agent.batch(agent.items("readings", [agent_json("alerts")])))
    assert later.status_code == 403
    assert agent.reply(later).status == "suspended"
    assert ReceivedItem.objects.count() == 0
    # It keeps counting, but the audit log got one row per violation up to the fifth.
    assert agent.row.policy_violations == 6
    assert len(violations(agent)) == 5


def test_bad_signatures_never_suspend_and_are_limited_per_source(agent, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(source_failure_rate="10/m")
    thief = SigningKey.generate()
    for _ in range(10):
        forged = agent.seal(b"{}", kind="poll", key=thief)
        response = agent.send(forged, ip="203.0.113.9")
        assert response.status_code == 401
        assert response.content == b""
    blocked = agent.send(agent.seal(b"{}", kind="poll", key=thief), ip="203.0.113.9")
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) >= 1
    # Even the right key from that address waits: the check comes before any parsing.
    assert agent.send(agent.poll(), ip="203.0.113.9").status_code == 429
    row = agent.row
    assert (row.status, row.policy_violations) == (AgentStatus.ACTIVE, 0)
    # The agent itself, from its own address, is unaffected.
    assert agent.send(agent.poll()).status_code == 200


def test_unknown_agent_and_garbage_get_401_and_400_with_empty_bodies(agent):
    other = SigningKey.generate()
    from fleetroom_protocol.envelope import seal

    stranger = seal(b"{}", signing_key=other, sender="00000000-0000-0000-0000-000000000000",
                    to=SERVER, ctr=1, kind="poll")
    response = agent.send(stranger)
    assert (response.status_code, response.content) == (401, b"")
    garbage = agent.send(b"not an envelope at all")
    assert (garbage.status_code, garbage.content) == (400, b"")


def test_message_addressed_elsewhere_is_a_violation(agent):
    response = agent.send(agent.batch([], to="some-other-server"))
    assert response.status_code == 403
    assert agent.row.last_violation == Violation.WRONG_RECIPIENT


def test_message_on_another_agents_channel_is_a_violation(client, tree, agent):
    other = FakeAgent(client, tree["s1"], hostname="other")
    outcome = receive_envelope(agent.poll(), transport="mqtt", source="mqtt:x",
                               expected_sender=other.agent_id)
    assert outcome.status == 403
    assert outcome.agent_id == agent.agent_id
    assert agent.row.last_violation == Violation.WRONG_CHANNEL
    assert other.row.policy_violations == 0
    ok = receive_envelope(agent.poll(), transport="mqtt", source="mqtt:x",
                          expected_sender=agent.agent_id)
    assert (ok.status, ok.agent_id) == (200, agent.agent_id)


def test_reenrollment_lifts_a_suspension_with_new_keys(client, agent):
    do_suspend_agent(agent.row, acting_user=SYSTEM)
    assert agent.send(agent.poll()).status_code == 403
    token_row, token = do_reenroll_agent(agent.row, acting_user=SYSTEM)
    assert token_row.for_agent_id == agent.row.pk
    req, new_key = enroll_request(token, hostname="pc-1-new")
    response = post_enroll(client, req)
    assert response.status_code == 201
    assert EnrollResponse.model_validate_json(response.content).agent_id == agent.agent_id
    row = agent.row
    assert (row.status, row.policy_violations, row.replay_state) == (AgentStatus.ACTIVE, 0, "")
    assert row.hostname == "pc-1-new"
    # The old key no longer works; the new one does, starting again at counter 1.
    assert agent.send(agent.poll()).status_code == 401
    agent.signing_key = new_key
    assert agent.send(agent.poll(ctr=1)).status_code == 200
    assert AuditEvent.objects.filter(action="agent.reenrolled").count() == 1


def test_unsuspend_and_revoke(agent):
    do_suspend_agent(agent.row, acting_user=SYSTEM)
    do_unsuspend_agent(agent.row, acting_user=SYSTEM)
    assert agent.send(agent.poll()).status_code == 200
    do_revoke_agent(agent.row, acting_user=SYSTEM)
    response = agent.send(agent.poll())
    assert response.status_code == 403
    assert agent.reply(response).status == "revoked"
    assert agent.row.last_violation == Violation.REVOKED


# --- commands -----------------------------------------------------------------------


def test_commands_are_delivered_once_and_results_recorded(agent):
    cmd = do_issue_command(agent.row, "read-device", {"target": "192.0.2.10"},
                           acting_user=SYSTEM, expires_in_s=3600)
    reply = agent.reply(agent.send(agent.poll()))
    assert [(c.id, c.kind, c.args) for c in reply.commands] == [
        (cmd.command_id, "read-device", {"target": "192.0.2.10"})]
    assert 3500 <= reply.commands[0].expires_in_s <= 3600
    cmd.refresh_from_db()
    assert (cmd.status, cmd.deliveries) == (CommandStatus.DELIVERED, 1)
    # The next reply does not carry it again.
    assert agent.reply(agent.send(agent.poll())).commands == []
    result = {"schema": "fleetroom.command-result/1", "command_id": cmd.command_id,
              "outcome": "done", "detail": "read 1 device", "data": {"readings": 1}}
    agent.send(agent.batch(agent.items("results", [result])))
    do_process_batch(ReceivedBatch.objects.get().pk)
    cmd.refresh_from_db()
    assert (cmd.status, cmd.result_detail, cmd.result_data) == (
        CommandStatus.DONE, "read 1 device", {"readings": 1})
    assert cmd.result_at is not None
    assert AuditEvent.objects.filter(action="agent.command_issued").count() == 1


def test_undelivered_reply_leads_to_redelivery_after_a_while(agent):
    cmd = do_issue_command(agent.row, "scan-now", acting_user=SYSTEM)
    assert len(agent.reply(agent.send(agent.poll())).commands) == 1
    AgentCommand.objects.filter(pk=cmd.pk).update(
        last_delivered_at=timezone.now() - timedelta(hours=1))
    again = agent.reply(agent.send(agent.poll())).commands
    assert [c.id for c in again] == [cmd.command_id]
    cmd.refresh_from_db()
    assert cmd.deliveries == 2


def test_expired_and_cancelled_commands_are_not_delivered(agent):
    old = do_issue_command(agent.row, "scan-now", acting_user=SYSTEM, expires_in_s=60)
    AgentCommand.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(1))
    cancelled = do_issue_command(agent.row, "diagnostics", acting_user=SYSTEM)
    do_cancel_command(cancelled, acting_user=SYSTEM)
    assert agent.reply(agent.send(agent.poll())).commands == []
    old.refresh_from_db()
    assert old.status == CommandStatus.EXPIRED


def test_push_commands_for_mqtt_is_signed_and_addressed(agent):
    assert push_commands(agent.row) is None
    cmd = do_issue_command(agent.row, "update-profiles", acting_user=SYSTEM)
    envelope = push_commands(agent.row)
    assert envelope is not None
    from fleetroom.agents.keys import server_keys
    from fleetroom_protocol.envelope import body_model

    sealed = split(envelope)
    verify(sealed, server_keys().verify_key)
    assert (sealed.header.kind, sealed.header.to) == ("command", agent.agent_id)
    assert [c.id for c in body_model(sealed, Reply).commands] == [cmd.command_id]
    assert push_commands(agent.row) is None  # delivered once

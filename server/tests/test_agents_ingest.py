"""Agent messages through the real HTTP endpoint: acknowledgements after commit,
repeats stored once, normalisation into the fleet, isolation, limits, skew.

Envelopes are sealed with keys made here and sent through Django's test client;
replies are verified with the server's public key.  Reading payloads are the real
agent's readings of the SYNTHETIC recordings; expected values come from the
recording files.
"""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from fleetroom.agents.models import (
    AgentGap,
    ItemState,
    ReceivedBatch,
    ReceivedItem,
)
from fleetroom.agents.processing import do_process_batch
from fleetroom.config import AgentsConfig
from fleetroom.fleet.models import CounterValue, Device, Reading
from fleetroom_protocol.envelope import SERVER, seal
from fleetroom_protocol.messages import AckRange, AgentState, Schedule

from server.tests.test_agents_support import (
    FakeAgent,
    agent_json,
    clean_limits_fixture,  # noqa: F401 (fixture)
    tree_fixture,  # noqa: F401 (fixture)
)
from server.tests.test_fleet_support import LIFE, SERIAL, recording

pytestmark = pytest.mark.django_db


def rec_int(r, oid):
    from tests.support.recordings import integer

    value = integer(r, oid)
    assert value is not None, oid
    return value


def rec_text(r, oid):
    from tests.support.recordings import text

    value = text(r, oid)
    assert value is not None, oid
    return value


def readings_items(agent: FakeAgent, communities: list[str]):
    return agent.items("readings", [agent_json(c) for c in communities])


# --- the round trip --------------------------------------------------------------------


def test_batch_round_trip_acks_and_normalises(client, tree, django_capture_on_commit_callbacks):
    agent = FakeAgent(client, tree["s1"])
    items = readings_items(agent, ["alerts", "demo-kyocera-m3145"])
    with django_capture_on_commit_callbacks(execute=True):
        response = agent.send(agent.batch(items))
    assert response.status_code == 200
    reply = agent.reply(response)
    assert reply.status == "ok"
    assert reply.acked == [AckRange(store=agent.store, stream="readings", first=1, last=2)]
    assert reply.problems == []
    # Stored raw and keyed, then normalised by the task queued after commit.
    batch = ReceivedBatch.objects.get()
    assert (batch.item_count, batch.new_items, batch.transport) == (2, 2, "https")
    assert batch.processed_at is not None
    assert set(ReceivedItem.objects.values_list("seq", "state")) == {
        (1, ItemState.DONE), (2, ItemState.DONE)}
    r = recording("alerts")
    device = Device.objects.get(serial=rec_text(r, SERIAL))
    reading = Reading.objects.get(device=device)
    assert reading.tenant_id == tree["s1"].pk
    assert reading.agent_id == agent.row.pk
    assert CounterValue.objects.get(reading=reading, name="total").value == rec_int(r, LIFE)
    kyocera = recording("demo-kyocera-m3145")
    assert Device.objects.filter(serial=rec_text(kyocera, SERIAL),
                                 tenant=tree["s1"]).exists()


def test_repeated_batch_is_stored_once_and_acked_again(client, tree,
                                                       django_capture_on_commit_callbacks):
    agent = FakeAgent(client, tree["s1"])
    items = readings_items(agent, ["alerts", "v1-missing", "demo-kyocera-m3145"])
    with django_capture_on_commit_callbacks(execute=True):
        first = agent.send(agent.batch(items))
        # The reply was lost: the agent sends the same items again, in a new message.
        second = agent.send(agent.batch(items))
    assert first.status_code == second.status_code == 200
    expected = [AckRange(store=agent.store, stream="readings", first=1, last=3)]
    assert agent.reply(second).acked == expected
    assert ReceivedItem.objects.count() == 3
    assert list(ReceivedBatch.objects.order_by("pk").values_list("new_items", flat=True)) == [3, 0]
    assert Reading.objects.count() == 3  # one per recording, not six


def test_ack_ranges_cover_every_stream_and_gap(client, tree):
    agent = FakeAgent(client, tree["s1"])
    readings = readings_items(agent, ["alerts", "v1-missing", "demo-kyocera-m3145"])
    gaps = agent.items("gaps", [{"type": "gap", "stream": "readings", "reason": "disk_budget",
                                 "count": 2, "first_seq": 10, "last_seq": 11,
                                 "ranges": [[10, 11]]}])
    # Seq 2 of readings is not in this batch: two ranges for that stream.
    items = [readings[0], readings[2], *gaps]
    response = agent.send(agent.batch(items))
    reply = agent.reply(response)
    assert reply.acked == [
        AckRange(store=agent.store, stream="gaps", first=1, last=1),
        AckRange(store=agent.store, stream="readings", first=1, last=1),
        AckRange(store=agent.store, stream="readings", first=3, last=3),
    ]


def test_gap_records_and_bad_readings_never_block_the_rest(client, tree):
    agent = FakeAgent(client, tree["s1"])
    good = json.loads(agent_json("alerts"))
    wrong_schema = {**good, "schema": "fleetroom.reading/9"}
    bad_value = json.loads(agent_json("v1-missing"))
    bad_value["counters"] = [{"name": "total", "value": -5, "source": "x"}]
    items = agent.items("readings", [wrong_schema, bad_value, good])
    items += agent.items("gaps", [{"type": "gap", "stream": "readings", "reason": "coalesced",
                                   "count": 3, "first_seq": 4, "last_seq": 6,
                                   "ranges": [[4, 6]], "agent_id": "someone-else"}])
    items += agent.items("weird", [{"x": 1}])
    response = agent.send(agent.batch(items))
    reply = agent.reply(response)
    assert [(p.stream, p.seq) for p in reply.problems] == [("weird", 1)]
    report = do_process_batch(ReceivedBatch.objects.get().pk)
    assert report is not None
    assert report.readings_stored == 1
    states = {(i.stream, i.seq): (i.state, i.error) for i in ReceivedItem.objects.all()}
    assert states["readings", 1][0] == ItemState.PROBLEM
    assert "unsupported schema 'fleetroom.reading/9'" in states["readings", 1][1]
    assert states["readings", 2][0] == ItemState.PROBLEM
    assert "counters.0.value" in states["readings", 2][1]
    assert states["readings", 3] == (ItemState.DONE, "")
    assert states["gaps", 1] == (ItemState.DONE, "")
    assert states["weird", 1] == (ItemState.PROBLEM, "unknown stream")
    gap = AgentGap.objects.get()
    assert (gap.agent_id, gap.stream, gap.reason, gap.count, gap.ranges) == (
        agent.row.pk, "readings", "coalesced", 3, [[4, 6]])
    assert Reading.objects.count() == 1
    # Running the task again changes nothing (idempotent).
    assert do_process_batch(ReceivedBatch.objects.get().pk) is None
    ReceivedBatch.objects.update(processed_at=None)
    ReceivedItem.objects.filter(stream="gaps").update(state=ItemState.PENDING)
    again = do_process_batch(ReceivedBatch.objects.get().pk)
    assert again is not None
    assert again.gaps == 1
    assert AgentGap.objects.count() == 1


def test_crash_before_finishing_reruns_without_duplicates(client, tree):
    agent = FakeAgent(client, tree["s1"])
    agent.send(agent.batch(readings_items(agent, ["alerts", "demo-kyocera-m3145"])))
    batch = ReceivedBatch.objects.get()
    first = do_process_batch(batch.pk)
    assert first is not None
    assert first.readings_stored == 2
    # Simulate a crash after the readings were stored but before the states were set.
    ReceivedBatch.objects.update(processed_at=None)
    ReceivedItem.objects.update(state=ItemState.PENDING)
    second = do_process_batch(batch.pk)
    assert second is not None
    assert (second.readings_stored, second.readings_duplicate) == (0, 2)
    assert Reading.objects.count() == 2
    assert set(ReceivedItem.objects.values_list("state", flat=True)) == {ItemState.DONE}


# --- isolation ----------------------------------------------------------------------


def test_tenant_comes_from_the_agent_row_never_the_payload(client, tree):
    mine = FakeAgent(client, tree["s1"], hostname="a")
    other = FakeAgent(client, tree["c2"], hostname="b")
    payload = json.loads(agent_json("alerts"))
    payload["tenant"] = tree["c2"].pk  # a claim the protocol does not have
    items = mine.items("readings", [agent_json("alerts"), payload])
    mine.send(mine.batch(items))
    do_process_batch(ReceivedBatch.objects.get().pk)
    assert set(Reading.objects.values_list("tenant_id", flat=True)) == {tree["s1"].pk}
    extra = ReceivedItem.objects.get(seq=2)
    assert extra.state == ItemState.PROBLEM
    assert "tenant" in extra.error
    # Signing as the other agent with our key does not work: 401, nothing stored.
    forged = seal(b'{"items":[]}', signing_key=mine.signing_key, sender=other.agent_id,
                  to=SERVER, ctr=1, kind="batch")
    response = other.send(forged)
    assert response.status_code == 401
    assert response.content == b""
    assert other.row.last_seen is None


def test_another_dealers_agent_claiming_a_device_is_refused_and_flagged(client, tree):
    """Dealer two's agent reporting dealer one's printer (its serial, e.g. read off
    the label): the item is a problem, the printer stays, one security event for that
    agent counts every further claim until someone acknowledges it."""
    from fleetroom.agents.models import SecurityEvent, SecurityEventKind

    owner = FakeAgent(client, tree["s1"], hostname="owner")
    claimer = FakeAgent(client, tree["c2"], hostname="claimer")
    owner.send(owner.batch(readings_items(owner, ["alerts"])))
    do_process_batch(ReceivedBatch.objects.get().pk)
    (device,) = Device.objects.all()
    serial = rec_text(recording("alerts"), SERIAL)
    assert device.serial == serial
    for _ in range(2):
        claimer.send(claimer.batch(readings_items(claimer, ["alerts"])))
        do_process_batch(ReceivedBatch.objects.filter(agent=claimer.row)
                         .order_by("-pk").first().pk)
    device.refresh_from_db()
    assert device.tenant == tree["s1"]
    assert not Reading.objects.filter(tenant=tree["c2"]).exists()
    items = list(ReceivedItem.objects.filter(agent=claimer.row))
    assert len(items) == 2
    assert {i.state for i in items} == {ItemState.PROBLEM}
    assert all("another dealer" in i.error and serial in i.error for i in items)
    (event,) = SecurityEvent.objects.filter(kind=SecurityEventKind.DEVICE_CLAIMED)
    assert (event.tenant, event.agent) == (tree["c2"], claimer.row)
    assert event.detail["count"] == 2
    sent = json.loads(agent_json("alerts"))["identity"]  # what the agent reported
    assert event.detail["devices"] == [f"{sent['manufacturer']} {serial}"]
    assert not SecurityEvent.objects.filter(agent=owner.row).exists()


def test_result_for_another_agents_command_is_refused(client, tree):
    from fleetroom.agents.services import do_issue_command
    from fleetroom.core.scoping import SYSTEM

    a = FakeAgent(client, tree["s1"], hostname="a")
    b = FakeAgent(client, tree["s2"], hostname="b")
    cmd = do_issue_command(a.row, "scan-now", acting_user=SYSTEM)
    result = {"schema": "fleetroom.command-result/1", "command_id": cmd.command_id,
              "outcome": "done", "detail": "forged"}
    b.send(b.batch(b.items("results", [result])))
    do_process_batch(ReceivedBatch.objects.get().pk)
    cmd.refresh_from_db()
    assert cmd.result_at is None
    assert cmd.result_detail == ""
    item = ReceivedItem.objects.get(agent=b.row)
    assert item.state == ItemState.PROBLEM
    assert item.error == "result for a command this agent was not given"


# --- limits ---------------------------------------------------------------------------


def test_gzip_bomb_stops_at_the_cap_quickly(client, tree, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(max_body_bytes=1024 * 1024)
    agent = FakeAgent(client, tree["s1"])
    # 1 GiB of JSON whitespace compresses to about a megabyte.
    chunk = b" " * (1 << 20)
    bomb = gzip.compress(b'{"items":[' + chunk * 1024, compresslevel=9)
    assert len(bomb) < 2 * 1024 * 1024
    envelope = _as_gzip(agent, bomb)  # seal() would compress it a second time
    started = time.monotonic()
    response = agent.send(envelope)
    elapsed = time.monotonic() - started
    assert response.status_code == 413
    assert agent.reply(response).message.startswith("decompressed body over")
    assert elapsed < 2.0
    assert ReceivedBatch.objects.count() == 0
    assert agent.row.policy_violations == 0


def _as_gzip(agent: FakeAgent, gz: bytes) -> bytes:
    """An envelope whose body is the given gzip bytes, header enc=gzip."""
    import base64

    from fleetroom_protocol.envelope import MAGIC, Header
    from fleetroom_protocol.keys import key_id

    header = Header(sender=agent.agent_id, to=SERVER, key=key_id(agent.signing_key.verify_key),
                    ctr=agent.next_ctr(), ts=datetime.now(UTC), kind="batch", enc="gzip",
                    body_len=len(gz))
    signed = header.model_dump_json().encode() + b"\n" + gz
    signature = agent.signing_key.sign(signed).signature
    return MAGIC + base64.b64encode(signature) + b"\n" + signed


def test_oversized_request_is_refused_before_reading(client, tree, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(max_envelope_bytes=64 * 1024)
    agent = FakeAgent(client, tree["s1"])
    big = agent.batch(agent.items("readings", [{"pad": "x" * 200_000}]), compress=False)
    response = agent.send(big)
    assert response.status_code == 413
    assert ReceivedBatch.objects.count() == 0


def test_agent_rate_limit_answers_429_with_retry_after(client, tree, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(agent_rate="3/m")
    agent = FakeAgent(client, tree["s1"])
    statuses = [agent.send(agent.poll()).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = agent.send(agent.poll())
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert agent.reply(limited).message
    assert agent.row.policy_violations == 0


def test_tenant_rate_limit_counts_all_agents_of_the_tenant(client, tree, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(tenant_rate="2/m")
    a = FakeAgent(client, tree["s1"], hostname="a")
    b = FakeAgent(client, tree["s1"], hostname="b")
    other = FakeAgent(client, tree["s2"], hostname="c")
    assert a.send(a.poll()).status_code == 200
    assert b.send(b.poll()).status_code == 200
    assert a.send(a.poll()).status_code == 429
    assert other.send(other.poll()).status_code == 200  # another tenant is unaffected


def test_backlog_answers_503_and_polls_still_pass(client, tree, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(max_backlog_batches=2)
    agent = FakeAgent(client, tree["s1"])
    for community in ("alerts", "v1-missing"):  # no worker runs: they stay pending
        assert agent.send(agent.batch(readings_items(agent, [community]))).status_code == 200
    items = readings_items(agent, ["demo-kyocera-m3145"])
    refused = agent.send(agent.batch(items))
    assert refused.status_code == 503
    assert int(refused["Retry-After"]) >= 1
    assert agent.reply(refused).acked == []
    assert ReceivedItem.objects.count() == 2
    assert agent.send(agent.poll()).status_code == 200
    do_process_batch(ReceivedBatch.objects.order_by("pk").first().pk)
    accepted = agent.send(agent.batch(items))
    assert accepted.status_code == 200
    assert agent.reply(accepted).acked[0].first == 3


# --- clock, state, schedule -----------------------------------------------------------


def test_wrong_agent_clock_is_measured_and_does_not_matter(client, tree):
    agent = FakeAgent(client, tree["s1"])
    wrong = timezone.now() - timedelta(days=400, hours=3)
    state = AgentState(hostname="pc-9", version="0.2.0", queue_items=17, devices=4,
                       weak_crypto_devices=["192.0.2.5"])
    response = agent.send(agent.batch(readings_items(agent, ["alerts"]), state=state,
                                      now=wrong))
    assert response.status_code == 200
    row = agent.row
    expected = (wrong - timezone.now()).total_seconds()
    assert row.clock_skew_s == pytest.approx(expected, abs=30)
    assert row.last_state["queue_items"] == 17
    assert row.last_state["weak_crypto_devices"] == ["192.0.2.5"]
    assert (row.hostname, row.version) == ("pc-9", "0.2.0")
    assert row.last_seen is not None
    assert row.overdue_since is None


def test_schedule_rides_the_reply_while_the_agent_is_behind(client, tree):
    from fleetroom.agents.services import do_set_schedule
    from fleetroom.core.scoping import SYSTEM

    agent = FakeAgent(client, tree["s1"])
    assert agent.enrolled.schedule.version == 1
    reply = agent.reply(agent.send(agent.poll(state=AgentState(schedule_version=1))))
    assert reply.schedule is None
    assert reply.poll_after_s == Schedule().command_poll_s
    do_set_schedule(agent.row, Schedule(status_poll_s=120, meter_read_s=3 * 3600),
                    acting_user=SYSTEM)
    reply = agent.reply(agent.send(agent.poll(state=AgentState(schedule_version=1))))
    assert reply.schedule is not None
    assert (reply.schedule.version, reply.schedule.status_poll_s,
            reply.schedule.meter_read_s) == (2, 120, 3 * 3600)
    reply = agent.reply(agent.send(agent.poll(state=AgentState(schedule_version=2))))
    assert reply.schedule is None

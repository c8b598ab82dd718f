"""The faster receive and normalisation paths keep every guarantee of the slow ones.

* Item keys go in with one ``INSERT … ON CONFLICT DO NOTHING`` per batch: repeats
  (inside a batch and across batches) are still stored once, counted as not new,
  and acknowledged; unknown streams are still problems.
* Waiting batches of one agent are normalised in one run, in order (a later
  reading's usage is computed against the earlier batch's reading), bounded by
  ``GROUP_ITEMS``; a batch that failed before, or a damaged one, holds up nobody.
* The one-pass parse of an all-readings batch yields exactly the readings the
  item-by-item path yields, and anything else takes the item-by-item path.

Envelopes are sealed by :class:`FakeAgent` and sent through the real HTTP endpoint;
no worker runs (on-commit callbacks are not executed), so batches stay waiting
until the test normalises them.  Expected values come from the SYNTHETIC recordings.
"""

from __future__ import annotations

import json

import pytest
from fleetroom.agents import processing
from fleetroom.agents.models import ItemState, ReceivedBatch, ReceivedItem
from fleetroom.agents.processing import batch_body, do_process_batch, parse_reading
from fleetroom.fleet.models import CounterValue, Device, Reading

from server.tests.test_agents_support import (
    FakeAgent,
    clean_limits_fixture,  # noqa: F401 (fixture)
    make_tree,
)
from server.tests.test_fleet_support import (
    COMMUNITIES,
    LIFE,
    SERIAL,
    agent_json,
    agent_reading,
    later,
    recording,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(client):
    return FakeAgent(client, make_tree()["s1"])


def life(community: str) -> int:
    from tests.support.recordings import integer

    value = integer(recording(community), LIFE)
    assert value is not None
    return value


def serial(community: str) -> str:
    from tests.support.recordings import text

    value = text(recording(community), SERIAL)
    assert value is not None
    return value


def send(agent: FakeAgent, items) -> ReceivedBatch:
    response = agent.send(agent.batch(items))
    assert response.status_code == 200, response.content
    return ReceivedBatch.objects.get(ctr=agent.last_ctr)


# --- item keys ---------------------------------------------------------------------


def test_item_keys_repeats_and_unknown_streams(agent):
    first = agent.items("readings", [agent_json("alerts"), agent_json("demo-kyocera-m3145")])
    b1 = send(agent, first)
    assert (b1.item_count, b1.new_items) == (2, 2)
    # Again: one repeat of the first batch, one item twice in this batch, one unknown stream.
    fresh = agent.items("readings", [agent_json("demo-ricoh-imc3000")])
    odd = agent.items("weird", [{"x": 1}])
    response = agent.send(agent.batch([first[1], *fresh, *fresh, *odd]))
    reply = agent.reply(response)
    store = agent.store
    assert [(a.stream, a.first, a.last) for a in reply.acked] == [
        ("readings", 2, 3), ("weird", 1, 1)]
    assert all(a.store == store for a in reply.acked)
    b2 = ReceivedBatch.objects.get(ctr=agent.last_ctr)
    assert (b2.item_count, b2.new_items) == (4, 2)
    keys = {(i.stream, i.seq): (i.batch_id, i.state, i.error, i.priority)
            for i in ReceivedItem.objects.all()}
    assert keys == {
        ("readings", 1): (b1.pk, ItemState.PENDING, "", 0),
        ("readings", 2): (b1.pk, ItemState.PENDING, "", 0),
        ("readings", 3): (b2.pk, ItemState.PENDING, "", 0),
        ("weird", 1): (b2.pk, ItemState.PROBLEM, "unknown stream", 0),
    }
    assert {i.received_at for i in ReceivedItem.objects.filter(batch=b2)} == {b2.received_at}
    # Normalised: each reading once, with the recording's serial number.
    report = do_process_batch(b1.pk)
    assert report is not None
    assert (report.batches, report.readings_stored) == (2, 3)
    assert sorted(Device.objects.values_list("serial", flat=True)) == sorted(
        serial(c) for c in ("alerts", "demo-kyocera-m3145", "demo-ricoh-imc3000"))


# --- grouping ----------------------------------------------------------------------


def test_waiting_batches_are_filed_in_one_run_in_order(agent):
    r1 = agent_reading("alerts")
    r2 = later(r1, 60)
    total = next(c for c in r2.counters if c.name == "total")
    assert total.value == life("alerts")
    total.value += 37
    b1 = send(agent, agent.items("readings", [r1.to_json(), agent_json("demo-kyocera-m3145")]))
    b2 = send(agent, agent.items("readings", [r2.to_json()]))
    b3 = send(agent, agent.items("alerts", [agent_json("alerts-warning")]))
    report = do_process_batch(b2.pk)  # any task of the group files them all
    assert report is not None
    assert (report.batches, report.readings_stored, report.problems) == (3, 4, {})
    for b in (b1, b2, b3):
        b.refresh_from_db()
        assert b.processed_at is not None
        assert b.attempts == 1
        assert b.error == ""
        assert do_process_batch(b.pk) is None  # the other queued tasks find them done
    assert set(ReceivedItem.objects.values_list("state", flat=True)) == {ItemState.DONE}
    device = Device.objects.get(serial=serial("alerts"))
    values = list(CounterValue.objects.filter(device=device, name="total")
                  .order_by("taken_at").values_list("value", "delta"))
    assert values == [(life("alerts"), None), (life("alerts") + 37, 37)]
    assert Reading.objects.count() == 4


def test_group_is_bounded_by_items(agent, monkeypatch):
    monkeypatch.setattr(processing, "GROUP_ITEMS", 3)
    b1 = send(agent, agent.items("readings", [agent_json("alerts"),
                                              agent_json("demo-kyocera-m3145")]))
    b2 = send(agent, agent.items("readings", [agent_json("demo-ricoh-imc3000")]))
    b3 = send(agent, agent.items("readings", [agent_json("alerts-warning")]))
    first = do_process_batch(b1.pk)
    assert first is not None
    assert (first.batches, first.readings_stored) == (2, 3)  # 2 + 1 items; a third is over
    b3.refresh_from_db()
    assert b3.processed_at is None
    second = do_process_batch(b3.pk)
    assert second is not None
    assert (second.batches, second.readings_stored) == (1, 1)
    assert ReceivedBatch.objects.get(pk=b2.pk).processed_at is not None


def test_batch_that_failed_before_is_retried_alone(agent):
    b1 = send(agent, agent.items("readings", [agent_json("alerts")]))
    b2 = send(agent, agent.items("readings", [agent_json("demo-kyocera-m3145")]))
    ReceivedBatch.objects.filter(pk=b1.pk).update(attempts=1)  # its first run crashed
    report = do_process_batch(b1.pk)
    assert report is not None
    assert (report.batches, report.readings_stored) == (1, 1)
    assert ReceivedBatch.objects.get(pk=b1.pk).attempts == 2
    assert ReceivedBatch.objects.get(pk=b2.pk).processed_at is None
    assert list(Device.objects.values_list("serial", flat=True)) == [serial("alerts")]


def test_damaged_batch_in_a_group_holds_up_nobody(agent):
    b1 = send(agent, agent.items("readings", [agent_json("alerts")]))
    b2 = send(agent, agent.items("readings", [agent_json("demo-kyocera-m3145")]))
    b3 = send(agent, agent.items("readings", [agent_json("demo-ricoh-imc3000")]))
    ReceivedBatch.objects.filter(pk=b2.pk).update(envelope=b"not an envelope")
    report = do_process_batch(b1.pk)
    assert report is not None
    assert (report.batches, report.readings_stored) == (3, 2)
    damaged = ReceivedItem.objects.get(batch=b2)
    assert damaged.state == ItemState.PROBLEM
    assert damaged.error.startswith("stored batch unreadable")
    assert ReceivedBatch.objects.get(pk=b2.pk).error == damaged.error
    assert sorted(Device.objects.values_list("serial", flat=True)) == sorted(
        [serial("alerts"), serial("demo-ricoh-imc3000")])
    assert ReceivedBatch.objects.filter(processed_at__isnull=True).count() == 0
    assert b3.pk in {b.pk for b in ReceivedBatch.objects.filter(error="")}


# --- one-pass parsing ----------------------------------------------------------------


def test_one_pass_parse_equals_item_by_item_parse(agent):
    batch = send(agent, agent.items("readings", [agent_json(c) for c in COMMUNITIES]))
    fast = processing._entries(batch)
    slow = [parse_reading(i.payload) for i in batch_body(batch).items]
    assert [e[3] for e in fast] == slow
    assert all(isinstance(e[3], processing.Reading) for e in fast)
    assert [(e[0], e[1], e[2]) for e in fast] == [
        (agent.store, "readings", n) for n in range(1, len(COMMUNITIES) + 1)]
    checked = [(r.identity.serial, serial(c)) for r, c in zip(slow, COMMUNITIES, strict=True)
               if SERIAL in recording(c)]
    assert len(checked) >= 3
    assert all(got == want for got, want in checked)


def test_anything_but_valid_readings_takes_the_item_by_item_path(agent):
    no_schema = json.loads(agent_json("alerts"))
    del no_schema["schema"]  # the model has a default; the server still insists
    gap = {"type": "gap", "stream": "readings", "reason": "coalesced", "count": 1,
           "ranges": [[9, 9]]}
    items = (agent.items("readings", [no_schema, agent_json("demo-kyocera-m3145")])
             + agent.items("gaps", [gap]))
    batch = send(agent, items)
    entries = processing._entries(batch)
    assert not any(isinstance(e[3], processing.Reading) for e in entries)
    report = do_process_batch(batch.pk)
    assert report is not None
    assert (report.readings_stored, report.gaps) == (1, 1)
    states = {(i.stream, i.seq): (i.state, i.error) for i in ReceivedItem.objects.all()}
    assert states["readings", 1][0] == ItemState.PROBLEM
    assert states["readings", 1][1].startswith("unsupported schema '?'")
    assert states["readings", 2] == (ItemState.DONE, "")
    assert states["gaps", 1] == (ItemState.DONE, "")
    assert list(Device.objects.values_list("serial", flat=True)) == [
        serial("demo-kyocera-m3145")]

"""What happens around the messages: silent agents flagged, lost queue entries swept
up, old raw batches pruned, readable overviews and scoped lists for the pages,
deactivated tenants, uncompressed bodies kept compressed."""

from __future__ import annotations

import zlib
from datetime import timedelta

import pytest
from django.utils import timezone
from fleetroom.accounts.testing import make_user
from fleetroom.agents import selectors
from fleetroom.agents.models import (
    Agent,
    AgentGap,
    ItemState,
    ReceivedBatch,
    ReceivedItem,
    SecurityEvent,
    SecurityEventKind,
)
from fleetroom.agents.processing import do_process_pending, do_prune_received
from fleetroom.agents.services import do_flag_silent_agents, do_set_schedule
from fleetroom.config import AgentsConfig
from fleetroom.core.scoping import SYSTEM
from fleetroom.fleet.models import Reading
from fleetroom.tenancy.services import do_deactivate, do_grant_membership, do_reactivate
from fleetroom_protocol.messages import AgentState, Schedule

from server.tests.test_agents_support import (
    FakeAgent,
    agent_json,
    clean_limits_fixture,  # noqa: F401 (fixture)
    tree_fixture,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.django_db


def test_silent_agents_are_flagged_after_three_polls_and_cleared_on_contact(client, tree):
    agent = FakeAgent(client, tree["s1"])
    do_set_schedule(agent.row, Schedule(status_poll_s=600), acting_user=SYSTEM)
    assert agent.send(agent.poll()).status_code == 200
    seen = agent.row.last_seen
    assert agent.row.silent_after == seen + timedelta(seconds=1800)  # 3 × 10 min
    assert do_flag_silent_agents(now=seen + timedelta(seconds=1799)) == 0
    assert do_flag_silent_agents(now=seen + timedelta(seconds=1801)) == 1
    assert do_flag_silent_agents(now=seen + timedelta(seconds=3600)) == 0  # once per silence
    row = agent.row
    assert row.overdue_since is not None
    event = SecurityEvent.objects.get(kind=SecurityEventKind.AGENT_SILENT)
    assert event.agent == row
    assert agent.send(agent.poll()).status_code == 200
    assert agent.row.overdue_since is None


def test_short_poll_intervals_still_get_fifteen_minutes(client, tree):
    agent = FakeAgent(client, tree["s1"])
    do_set_schedule(agent.row, Schedule(status_poll_s=60), acting_user=SYSTEM)
    agent.send(agent.poll())
    row = agent.row
    assert row.silent_after - row.last_seen == timedelta(minutes=15)
    assert not selectors.is_overdue(row, row.last_seen + timedelta(minutes=14))
    assert selectors.is_overdue(row, row.last_seen + timedelta(minutes=16))


def test_batches_whose_task_was_lost_are_swept_up(client, tree):
    agent = FakeAgent(client, tree["s1"])
    # No on-commit callbacks run here: the queued task is "lost".
    agent.send(agent.batch(agent.items("readings", [agent_json("alerts")])))
    batch = ReceivedBatch.objects.get()
    assert batch.processed_at is None
    assert do_process_pending() == 0  # too fresh: its task may still be on its way
    ReceivedBatch.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    assert do_process_pending() == 1
    assert Reading.objects.count() == 1
    assert ReceivedItem.objects.get().state == ItemState.DONE


def test_uncompressed_body_is_stored_compressed_and_processed(client, tree):
    agent = FakeAgent(client, tree["s1"])
    envelope = agent.batch(agent.items("readings", [agent_json("alerts")]), compress=False)
    assert agent.send(envelope).status_code == 200
    batch = ReceivedBatch.objects.get()
    assert batch.envelope_zlib
    assert zlib.decompress(bytes(batch.envelope)) == envelope
    assert batch.size_bytes == len(envelope)
    ReceivedBatch.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    assert do_process_pending() == 1
    assert Reading.objects.count() == 1


def test_old_raw_batches_and_keys_are_pruned_but_gaps_keep_theirs(client, tree, settings):
    settings.FLEETROOM_AGENTS = AgentsConfig(raw_retention_days=7, item_retention_days=30)
    agent = FakeAgent(client, tree["s1"])
    gap = {"type": "gap", "stream": "readings", "reason": "store_corrupt", "count": 0,
           "ranges": []}
    agent.send(agent.batch(agent.items("readings", [agent_json("alerts")])
                           + agent.items("gaps", [gap])))
    ReceivedBatch.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    do_process_pending()
    assert AgentGap.objects.count() == 1
    now = timezone.now()
    assert do_prune_received(now=now + timedelta(days=6)) == (0, 0)
    assert do_prune_received(now=now + timedelta(days=8)) == (1, 0)
    assert ReceivedItem.objects.filter(batch__isnull=True).count() == 2
    assert do_prune_received(now=now + timedelta(days=31)) == (0, 1)
    assert list(ReceivedItem.objects.values_list("stream", flat=True)) == ["gaps"]


def test_deactivated_tenant_is_refused_without_counting_and_data_waits(client, tree):
    agent = FakeAgent(client, tree["s1"])
    do_deactivate(tree["c1"], SYSTEM)
    response = agent.send(agent.batch(agent.items("readings", [agent_json("alerts")])))
    assert response.status_code == 403
    assert agent.reply(response).acked == []
    assert agent.row.policy_violations == 0
    do_reactivate(tree["c1"], SYSTEM)
    assert agent.send(agent.poll()).status_code == 200


def test_overview_and_scoped_lists_for_the_pages(client, tree):
    berlin = FakeAgent(client, tree["s1"], hostname="berlin")
    globex = FakeAgent(client, tree["c2"], hostname="globex")
    state = AgentState(queue_items=12, queue_bytes=3456, devices=7,
                       weak_crypto_devices=["192.0.2.1", "192.0.2.2"], last_error="timeout")
    berlin.send(berlin.batch(berlin.items("gaps", [
        {"type": "gap", "stream": "readings", "reason": "disk_budget", "count": 4,
         "ranges": [[1, 4]]}]), state=state))
    ReceivedBatch.objects.update(received_at=timezone.now() - timedelta(minutes=5))
    do_process_pending()
    view = selectors.overview(berlin.row)
    assert (view.queue_items, view.queue_bytes, view.devices, view.last_error) == (
        12, 3456, 7, "timeout")
    assert view.weak_crypto_devices == ["192.0.2.1", "192.0.2.2"]
    assert (view.gaps, view.missing_items, view.pending_batches) == (1, 4, 0)
    assert not view.overdue
    hamburg_only = make_user("hans")
    do_grant_membership(hamburg_only, tree["c1"], acting_user=SYSTEM, role="customer_viewer",
                        sites=[tree["s2"]])
    acme = make_user("anna")
    do_grant_membership(acme, tree["c1"], acting_user=SYSTEM, role="customer_viewer")
    assert list(selectors.agents(acme)) == [berlin.row]
    assert list(selectors.agents(hamburg_only)) == []
    assert list(selectors.gaps(acme)) == list(AgentGap.objects.all())
    assert list(selectors.gaps(hamburg_only)) == []
    assert selectors.counts_by_status(acme) == {"active": 1, "overdue": 0}
    assert selectors.agent_encryption_key(globex.agent_id) == globex.row.public_key
    assert selectors.agent_encryption_key("nobody") is None
    assert Agent.objects.count() == 2

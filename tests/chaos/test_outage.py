"""The server away for 72 hours: what a 1,000-device site stores meanwhile reaches the
server completely, once, and in order, and is normalised.

The volume is what the schedule implies: the server's default schedule (the one every
newly enrolled agent gets) reads meters every 24 h, so 72 h are three reads of each of
the 1,000 devices — 3,000 readings, stored by the agent's collector API while the server
is down (the agent's back-off cap is shortened to a second; in the field it waits up
to five minutes between attempts, which adds at most that to the drain).  "In order":
within every stream, items sorted by seq arrived in non-decreasing batches.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from fleetroom_protocol.messages import Schedule

from tests.support.chaos_agent import AgentHost
from tests.support.chaos_readings import outage_reads
from tests.support.chaos_server import ServerHost
from tests.support.chaos_truth import compare, read_journal, stream_order_ok

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chaos"), pytest.mark.timeout(600)]

DEVICES = 1000


def test_72_hour_outage_drains_completely_and_in_order(
        chaos_server: ServerHost, new_agent: Callable[..., AgentHost]) -> None:
    schedule = Schedule()  # what the server hands out by default
    expected = DEVICES * outage_reads(schedule)
    assert expected == 3000
    agent = new_agent()
    chaos_server.kill()  # the outage
    agent.start(max_items=500)  # the sender's production batch size
    filled = agent.call("fill", timeout=300, devices=DEVICES,
                        meter_read_s=schedule.meter_read_s, hours=72, chunk=100)
    assert filled["stored"] == filled["planned"] == expected
    waiting = agent.call("stats")
    assert waiting["items"] == expected
    assert waiting["sender"]["consecutive_failures"] > 0  # it did try, and keeps trying

    t0 = time.monotonic()
    chaos_server.start()
    drained = agent.wait_drained(300)
    drain_s = time.monotonic() - t0
    assert drained["items"] == 0
    assert agent.stop() == 0
    counts = chaos_server.wait_processed(agent.agent_id)
    processed_s = time.monotonic() - t0

    dump = chaos_server.dump(agent.agent_id)
    verdict = compare(read_journal(agent.journal, agent.agent_id), dump)
    assert verdict.problems() == [], verdict.summary()
    assert verdict.journalled == verdict.on_server == expected
    assert stream_order_ok(dump) == []
    assert counts["readings"] == expected
    per_device = Counter(r["serial"] for r in dump["readings"])
    assert len(per_device) == DEVICES
    assert set(per_device.values()) == {outage_reads(schedule)}
    print(f"72 h outage of a {DEVICES}-device site: {expected} readings in "
          f"{len(dump['batches'])} batches; on the server after {drain_s:.1f} s, "
          f"normalised after {processed_s:.1f} s")

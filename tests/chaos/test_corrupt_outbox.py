"""A corrupt outbox: quarantined once, a fresh store started, the gap reported — no crash
loop, and nothing else lost.

Twice, with the server away so items are waiting: the agent is stopped, its outbox
damaged — first overwritten at the start (a foreign file), then with its pages after the
first scrambled (the header still says SQLite; ``quick_check`` finds the damage) — and
started again.  Each time the agent must come up with a new store id and exactly one
more ``outbox.sqlite3.corrupt-*`` file, stay up, not quarantine again on the next
restart, and deliver a ``store_corrupt`` gap record.  Ground truth: the items lost are
exactly those that were waiting in the damaged store; everything else arrives once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.chaos_agent import AgentHost
from tests.support.chaos_server import ServerHost
from tests.support.chaos_truth import compare, read_journal

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chaos"), pytest.mark.timeout(600)]


def foreign_header(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.write(b"definitely not an outbox " * 4)


def scrambled_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    rng = random.Random(4)
    for i in range(page, len(data)):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))


def quarantined(agent: AgentHost) -> list[str]:
    return sorted(p.name for p in agent.data_dir.glob("outbox.sqlite3.corrupt-*")
                  if not p.name.endswith(("-wal", "-shm")))


def test_corrupt_outbox_is_quarantined_once_and_the_gap_delivered(
        chaos_server: ServerHost, new_agent: Callable[..., AgentHost]) -> None:
    agent = new_agent()
    lost_with_store = 0
    stores = []
    for n, damage in enumerate((foreign_header, scrambled_pages), start=1):
        ev = agent.start()
        stores.append(ev["store"])
        before = chaos_server.counts(agent.agent_id)["items"]
        agent.call("produce", per_put=5)
        deadline = time.monotonic() + 60
        while chaos_server.counts(agent.agent_id)["items"] == before:  # some are delivered
            assert time.monotonic() < deadline
            time.sleep(0.1)
        agent.call("pause")
        agent.wait_drained(60)  # every delivered item acknowledged: none is in flight
        chaos_server.kill()
        agent.call("produce")
        time.sleep(1.0)  # and these wait: the server is away
        agent.call("pause")
        waiting = agent.call("stats")["items"]
        assert waiting > 0
        lost_with_store += waiting
        assert agent.stop() == 0  # closed cleanly: the damage is all ours
        damage(agent.data_dir / "outbox.sqlite3")

        chaos_server.start()
        ev = agent.start()
        assert ev["quarantined_to"] is not None
        assert ev["store"] not in stores
        assert len(quarantined(agent)) == n
        time.sleep(2.0)
        assert agent.running()  # no crash, no loop
        assert agent.stop() == 0
        again = agent.start()  # the fresh store is healthy: no second quarantine
        assert again["quarantined_to"] is None
        assert again["store"] == ev["store"]
        assert len(quarantined(agent)) == n
        stores.append(ev["store"])
        agent.wait_drained(60)
        assert agent.stop() == 0

    chaos_server.wait_processed(agent.agent_id)
    dump = chaos_server.dump(agent.agent_id)
    verdict = compare(read_journal(agent.journal, agent.agent_id), dump)
    assert verdict.problems() == [], verdict.summary()
    corrupt = [g for g in dump["gaps"] if g["reason"] == "store_corrupt"]
    assert len(corrupt) == 2
    assert {g["detail"]["quarantined_as"] for g in corrupt} == set(quarantined(agent))
    # exactly the items waiting in the damaged stores are missing, and explained
    assert verdict.explained_by_gaps == lost_with_store
    print(f"two quarantines, {lost_with_store} waiting items lost with their stores and "
          f"reported; {verdict.summary()}")

"""kill -9 of the agent (20 cycles), of the server mid-upload (20), of both (10): every
reading the agent committed is on the server exactly once, and normalised once.

Real processes throughout: the agent runtime (:mod:`tests.support.chaos_agent`, a new
process per start — forked from a pre-imported zygote, every fifth one a fresh Python
— storing readings through its collector and sending them with its sender and HTTPS
transport), gunicorn and the Huey consumer over TLS (:mod:`tests.support.chaos_server`,
their process groups SIGKILLed).  The ground truth
is the outbox journal (one fsynced line per committed item); the check is
:func:`tests.support.chaos_truth.compare` against the server's item keys, the payloads
in its stored batches and its fleet readings.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import pytest

from tests.support.chaos_agent import AgentHost
from tests.support.chaos_server import ServerHost
from tests.support.chaos_truth import compare, read_journal

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chaos"), pytest.mark.timeout(600)]

PER_PUT = 4
"""Readings per put (one outbox transaction): a kill between a commit and its journal
line can leave at most this many items on the server that the journal does not list."""

MID_UPLOAD = re.compile(r"delivery attempt failed: https: .*(connection lost|Server "
                        r"disconnected|ReadError|RemoteProtocolError|reset by peer|timed out)")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def items_on_server(server: ServerHost, agent: AgentHost) -> int:
    return int(server.counts(agent.agent_id)["items"])


def wait_new_items(server: ServerHost, agent: AgentHost, timeout: float = 60) -> None:
    """Until the server has stored something new from ``agent``: uploads are flowing."""
    before = items_on_server(server, agent)
    wait_for(lambda: items_on_server(server, agent) > before, timeout, "new items on the server")


def finish_and_check(server: ServerHost, agent: AgentHost) -> str:
    """Stop producing, drain, stop the agent, let the worker finish, compare; a summary
    (with the number of batches the server received again because the acknowledgement
    of a committed batch never reached the agent)."""
    server.start()
    if not agent.running():
        agent.start()
    agent.call("pause")
    agent.wait_drained(180)
    assert agent.stop() == 0
    server.wait_processed(agent.agent_id)
    dump = server.dump(agent.agent_id)
    verdict = compare(read_journal(agent.journal, agent.agent_id), dump)
    assert verdict.problems(max_unjournalled=agent.kills * PER_PUT) == [], verdict.summary()
    assert verdict.journalled > 0
    repeats = sum(1 for b in dump["batches"] if b["new"] < b["items"])
    return f"{verdict.summary()}, batches received again after a lost ack: {repeats}"


def log_size(agent: AgentHost) -> int:
    return agent.log.stat().st_size if agent.log.exists() else 0


def cut_an_upload(agent: AgentHost, since: int) -> bool:
    """Whether the agent's log since offset ``since`` shows a request cut off mid-way
    (not merely refused because the server was already down)."""
    with agent.log.open("rb") as fh:
        fh.seek(since)
        text = fh.read().decode(errors="replace")
    return bool(MID_UPLOAD.search(text))


def test_agent_killed_20_times(chaos_server: ServerHost,
                               new_agent: Callable[..., AgentHost]) -> None:
    agent = new_agent()
    rng = random.Random()
    stores = set()
    for cycle in range(20):
        ev = agent.start(produce=True, per_put=PER_PUT, fresh=cycle % 5 == 0)
        assert ev["quarantined_to"] is None  # a kill never damages the store
        stores.add(ev["store"])
        time.sleep(rng.uniform(0.1, 1.0))  # mid-put, mid-upload or mid-ack: wherever it lands
        agent.kill()
    assert len(stores) == 1
    summary = finish_and_check(chaos_server, agent)
    print(f"agent kills: {agent.kills}; {summary}")


def test_server_killed_20_times_mid_upload(chaos_server: ServerHost,
                                           new_agent: Callable[..., AgentHost]) -> None:
    agent = new_agent()
    rng = random.Random()
    agent.start(produce=True, per_put=PER_PUT)
    hits = 0
    for _ in range(20):
        wait_new_items(chaos_server, agent)
        time.sleep(rng.uniform(0.0, 0.3))
        mark = log_size(agent)
        chaos_server.kill()  # web and worker, each process group with SIGKILL
        time.sleep(rng.uniform(0.1, 0.6))
        hits += cut_an_upload(agent, mark)
        chaos_server.start()
    wait_new_items(chaos_server, agent)
    summary = finish_and_check(chaos_server, agent)
    print(f"server kills: 20, {hits} of them cut an upload in flight; {summary}")
    assert hits >= 5, f"only {hits} of 20 kills landed during an upload"


def test_agent_and_server_killed_10_times(chaos_server: ServerHost,
                                          new_agent: Callable[..., AgentHost]) -> None:
    agent = new_agent()
    rng = random.Random()
    agent.start(produce=True, per_put=PER_PUT)
    for _ in range(10):
        wait_new_items(chaos_server, agent)
        time.sleep(rng.uniform(0.0, 0.5))
        if rng.random() < 0.5:
            agent.kill()
            time.sleep(rng.uniform(0.0, 0.2))
            chaos_server.kill()
        else:
            chaos_server.kill()
            time.sleep(rng.uniform(0.0, 0.2))
            agent.kill()
        if rng.random() < 0.5:
            chaos_server.start()
            ev = agent.start(produce=True, per_put=PER_PUT)
        else:
            ev = agent.start(produce=True, per_put=PER_PUT)
            time.sleep(rng.uniform(0.0, 0.5))
            chaos_server.start()
        assert ev["quarantined_to"] is None
    wait_new_items(chaos_server, agent)
    summary = finish_and_check(chaos_server, agent)
    print(f"double kills: {agent.kills}; {summary}")

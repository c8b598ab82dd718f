"""The sender end to end: real outbox (SQLite) → real HTTPS transport (HTTP/2, TLS on
127.0.0.1) → the protocol fake server, with injected failures.

Ground truth is what the test put into the outbox; the fake server's store is
compared with it item by item.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from fleetroom_agent.backoff import Backoff
from fleetroom_agent.identity import AgentIdentity, CounterStore
from fleetroom_agent.outbox import NewItem, Outbox, Priority
from fleetroom_agent.sender import ReplyRejected, Sender
from fleetroom_agent.transports.https import HttpsTransport
from fleetroom_protocol.messages import AgentState, Command, Reply, Schedule
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from agent.tests.test_sender_fakeserver import FakeFleetroom, free_port, make_certs, serve_app


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


class Agent:
    """An agent identity registered with ``fake``, its outbox, and the replies it got."""

    def __init__(self, fake: FakeFleetroom, tmp_path, base: str) -> None:
        key = SigningKey.generate()
        self.identity = AgentIdentity(
            agent_id=str(uuid.uuid4()), server_url=base, signing_key=key,
            encryption_key=PrivateKey.generate(),
            server_verify_key=fake.signing_key.verify_key,
            server_public_key=fake.encryption_key.public_key, tenant="acme",
            schedule=Schedule(command_poll_s=300)).save(tmp_path / "data")
        fake.add_agent(self.identity.agent_id, key.verify_key)
        self.outbox = Outbox.in_data_dir(tmp_path / "data", self.identity.agent_id)
        self.replies: list[Reply] = []
        self.expected: dict[tuple[str, str, str, int], bytes] = {}

    def put(self, stream: str, n: int, priority: Priority = Priority.NORMAL) -> None:
        items = [NewItem(stream, json.dumps({"stream": stream, "n": i}).encode(), priority)
                 for i in range(n)]
        seqs = self.outbox.put_many(items)
        store = self.outbox.store_id
        for item, seq in zip(items, seqs, strict=True):
            key = (self.identity.agent_id, store, stream, seq)
            self.expected[key] = json.dumps(json.loads(item.payload), sort_keys=True).encode()

    async def on_reply(self, reply: Reply) -> None:
        self.replies.append(reply)

    def sender(self, transports, **kw) -> Sender:
        return Sender(self.identity, self.outbox, transports,
                      lambda: AgentState(version="test", queue_items=0), self.on_reply,
                      backoff=kw.pop("backoff", Backoff(base_s=0.01, cap_s=0.05)), **kw)


async def until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def pending(outbox: Outbox) -> int:
    return outbox.stats().total_items


async def test_every_item_arrives_exactly_once_across_failures_and_failover(certs, tmp_path):
    fake = FakeFleetroom()
    faults = ["503", "bad-signature", "tampered", "wrong-agent", "wrong-reply-to",
              "commit-then-500", "ack-other-store"]
    fake.faults = [*faults, None, "bad-signature", None]
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        agent.put("readings", 40)
        agent.put("alerts", 5, Priority.CRITICAL)
        agent.put("results", 5, Priority.HIGH)
        dead = HttpsTransport(f"https://127.0.0.1:{free_port()}", name="https-dead",
                              ca_file=certs.ca_file)
        live = HttpsTransport(base, name="https", ca_file=certs.ca_file)
        sender = agent.sender([dead, live], max_items=10)
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: sender.status().items_acked == 50)
        finally:
            task.cancel()
            await sender.aclose()
    assert fake.stored == agent.expected  # every item, with its payload, stored once
    assert pending(agent.outbox) == 0
    assert fake.violations == []  # no counter was ever reused
    ctrs = [r.ctr for r in fake.requests]
    assert len(ctrs) == len(set(ctrs))
    # a failed exchange acknowledged nothing: the next request carried the same items
    for i, req in enumerate(fake.requests):
        if req.fault in faults or req.fault == "bad-signature":
            assert fake.requests[i + 1].keys == req.keys, req.fault
    assert fake.duplicates >= 6  # stored-but-unacknowledged batches were sent again
    assert {r.transport for r in fake.requests} == {"https"}
    assert all(r.http_version == "2" for r in fake.requests)
    status = sender.status()
    assert status.items_acked == 50
    assert status.consecutive_failures == 0
    assert status.last_transport == "https"
    assert status.transports["https-dead"]["failures"] >= 1
    assert "connection refused" in status.transports["https-dead"]["last_error"]
    assert status.last_ack_at is not None
    assert status.suspended is None


async def test_critical_items_go_first(certs, tmp_path):
    fake = FakeFleetroom()
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        agent.put("readings", 12)
        agent.put("alerts", 3, Priority.CRITICAL)
        sender = agent.sender([HttpsTransport(base, ca_file=certs.ca_file)], max_items=5)
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: pending(agent.outbox) == 0)
        finally:
            task.cancel()
            await sender.aclose()
    batches = [r.keys for r in fake.requests if r.kind == "batch"]
    assert [k[1] for k in batches[0]] == ["alerts"] * 3 + ["readings"] * 2
    readings = [k[2] for b in batches for k in b if k[1] == "readings"]
    assert readings == list(range(1, 13))  # then in order, each once
    assert fake.stored == agent.expected


async def test_retry_after_is_honoured_even_when_woken(certs, tmp_path):
    fake = FakeFleetroom(faults=["429:1"])
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        agent.put("alerts", 2, Priority.CRITICAL)
        # two ways to the same server: the second must not be used to dodge the wait
        sender = agent.sender([HttpsTransport(base, name="a", ca_file=certs.ca_file),
                               HttpsTransport(base, name="b", ca_file=certs.ca_file)])
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: len(fake.requests) >= 1)
            await until(lambda: sender.status().consecutive_failures == 1)
            status = sender.status()
            assert status.last_error is not None
            assert "busy (HTTP 429)" in status.last_error
            assert status.next_attempt_at is not None
            assert (status.next_attempt_at - datetime.now(UTC)).total_seconds() > 0.5
            for _ in range(5):  # a wake (new critical alert) must not cut Retry-After short
                sender.wake()
                await asyncio.sleep(0.05)
            await until(lambda: pending(agent.outbox) == 0)
        finally:
            task.cancel()
            await sender.aclose()
    assert len(fake.requests) == 2
    waited = fake.requests[1].at - fake.requests[0].at
    assert waited >= 1.0
    assert fake.requests[0].fault == "429:1"
    assert fake.stored == agent.expected


async def test_suspension_stops_sending_and_is_reported(certs, tmp_path):
    fake = FakeFleetroom(faults=["suspend"])
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        agent.put("readings", 3)
        sender = agent.sender([HttpsTransport(base, ca_file=certs.ca_file)])
        await asyncio.wait_for(sender.run(), 10)  # returns instead of retrying
        sender.wake()
        assert await sender.poll() is None
        await sender.aclose()
    assert len(fake.requests) == 1
    status = sender.status()
    assert status.suspended == "suspended"
    assert status.server_message == "five policy violations"
    assert status.last_error is not None
    assert "re-enroll" in status.last_error
    assert pending(agent.outbox) == 3  # nothing acknowledged, nothing lost
    assert agent.replies[0].status == "suspended"


async def test_idle_agent_polls_gets_commands_and_a_wake_sends_at_once(certs, tmp_path):
    fake = FakeFleetroom()
    issued = datetime.now(UTC)
    fake.commands = [Command(id="c-1", kind="scan-now", issued_at=issued, expires_in_s=600)]
    fake.schedule = Schedule(version=2, command_poll_s=45)
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        sender = agent.sender([HttpsTransport(base, ca_file=certs.ca_file)])
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: len(agent.replies) == 1)
            assert [r.kind for r in fake.requests] == ["poll"]
            await asyncio.sleep(0.3)
            assert len(fake.requests) == 1  # no busy polling: next poll in 45 s
            agent.put("alerts", 1, Priority.CRITICAL)
            woken = time.monotonic()
            sender.wake()
            await until(lambda: len(fake.stored) == 1, timeout=5)
            latency = time.monotonic() - woken
        finally:
            task.cancel()
            await sender.aclose()
    assert latency < 1.0
    assert agent.replies[0].commands[0].id == "c-1"
    assert sender.schedule.version == 2
    assert sender.schedule.command_poll_s == 45
    assert fake.stored == agent.expected


async def test_pushed_envelopes_are_verified(certs, tmp_path):
    fake = FakeFleetroom()
    agent = Agent(fake, tmp_path, "https://127.0.0.1:1")
    sender = agent.sender([HttpsTransport("https://127.0.0.1:1")])
    cmd = Command(id="c-9", kind="diagnostics", issued_at=datetime.now(UTC), expires_in_s=60)
    ok = fake.seal_reply(Reply(commands=[cmd]), to=agent.identity.agent_id, reply_to=None,
                         kind="command")
    reply = await sender.accept_push(ok)
    assert reply.commands == [cmd]
    assert agent.replies == [reply]
    bad = [
        fake.seal_reply(Reply(commands=[cmd]), to=str(uuid.uuid4()), reply_to=None,
                        kind="command"),
        fake.seal_reply(Reply(commands=[cmd]), to=agent.identity.agent_id, reply_to=None,
                        key=SigningKey.generate(), kind="command"),
        fake.seal_reply(Reply(commands=[cmd]), to=agent.identity.agent_id, reply_to=None,
                        kind="batch"),
        ok[:-3],
    ]
    messages = []
    for data in bad:
        with pytest.raises(ReplyRejected) as info:
            await sender.accept_push(data)
        messages.append(str(info.value))
    assert "not to this agent" in messages[0]
    assert "signed with another key" in messages[1]
    assert "cannot be pushed" in messages[2]
    assert "length" in messages[3]
    assert agent.replies == [reply]  # nothing unverified reached the runtime
    await sender.aclose()


def test_counter_comes_from_the_data_directory(tmp_path):
    fake = FakeFleetroom()
    agent = Agent(fake, tmp_path, "https://127.0.0.1:1")
    sender = agent.sender([HttpsTransport("https://127.0.0.1:1")])
    assert sender.counter.path == CounterStore(tmp_path / "data").path
    memory_only = AgentIdentity(**{f: getattr(agent.identity, f) for f in (
        "agent_id", "server_url", "signing_key", "encryption_key", "server_verify_key",
        "server_public_key", "tenant")})
    with pytest.raises(ValueError, match="counter="):
        Sender(memory_only, agent.outbox, [HttpsTransport("https://127.0.0.1:1")],
               AgentState, agent.on_reply)


async def test_a_too_large_batch_is_split(certs, tmp_path):
    fake = FakeFleetroom(faults=["413"])
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        agent.put("readings", 8)
        sender = agent.sender([HttpsTransport(base, ca_file=certs.ca_file)])
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: pending(agent.outbox) == 0)
        finally:
            task.cancel()
            await sender.aclose()
    assert [len(r.keys) for r in fake.requests] == [8, 4, 4]
    assert fake.stored == agent.expected


class OneWay:
    """A transport without a reply channel (what e-mail is): records what it sent."""

    name = "oneway"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def exchange(self, envelope: bytes) -> None:
        self.sent.append(envelope)

    async def aclose(self) -> None:
        pass


async def test_one_way_hand_over_waits_for_a_pushed_acknowledgement(tmp_path):
    from fleetroom_protocol.envelope import body_model, split, verify
    from fleetroom_protocol.messages import BatchBody

    from agent.tests.test_sender_fakeserver import ranges

    fake = FakeFleetroom()
    agent = Agent(fake, tmp_path, "https://127.0.0.1:1")
    agent.put("readings", 3)
    oneway = OneWay()
    sender = agent.sender([oneway], one_way_resend_s=30)
    task = asyncio.create_task(sender.run())
    try:
        await until(lambda: len(oneway.sent) == 1)
        await asyncio.sleep(0.3)
        assert len(oneway.sent) == 1  # no resend storm while the acknowledgement travels
        sealed = split(oneway.sent[0])
        verify(sealed, agent.identity.signing_key.verify_key)
        items = body_model(sealed, BatchBody).items
        keys = [(i.store, i.stream, i.seq) for i in items]
        ack = fake.seal_reply(Reply(acked=ranges(keys)), to=agent.identity.agent_id,
                              reply_to=sealed.header.ctr)
        await sender.accept_push(ack)
    finally:
        task.cancel()
        await sender.aclose()
    assert pending(agent.outbox) == 0
    assert [k[1:] for k in keys] == [("readings", 1), ("readings", 2), ("readings", 3)]
    assert sender.status().items_acked == 3
    assert sender.status().last_transport == "oneway"


async def test_a_reply_handler_may_poll_again_without_deadlock(certs, tmp_path):
    fake = FakeFleetroom()
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        sender = agent.sender([HttpsTransport(base, ca_file=certs.ca_file)])
        seen: list[Reply] = []

        async def handler(reply: Reply) -> None:
            seen.append(reply)
            if len(seen) == 1:  # e.g. "update-profiles" asking for a fresh poll
                assert await sender.poll() is not None

        sender.on_reply = handler
        try:
            assert await asyncio.wait_for(sender.poll(), 10) is not None
        finally:
            await sender.aclose()
    assert len(seen) == 2
    assert [r.kind for r in fake.requests] == ["poll", "poll"]
    assert fake.requests[0].ctr < fake.requests[1].ctr


async def test_no_counter_no_sending_but_no_crash_either(certs, tmp_path):
    """The counter file cannot be written (here: a directory in its place, as a full or
    read-only disk would): nothing is sent, the loop survives, and delivery resumes."""
    from fleetroom_agent.identity import COUNTER_FILENAME

    fake = FakeFleetroom()
    async with serve_app(fake, certs=certs) as base:
        agent = Agent(fake, tmp_path, base)
        agent.put("alerts", 2, Priority.CRITICAL)
        blocker = tmp_path / "data" / COUNTER_FILENAME
        blocker.mkdir()
        sender = agent.sender([HttpsTransport(base, ca_file=certs.ca_file)])
        task = asyncio.create_task(sender.run())
        try:
            await until(lambda: sender.status().consecutive_failures >= 2)
            assert fake.requests == []
            assert "cannot reserve a message counter" in (sender.status().last_error or "")
            assert not task.done()  # the loop survived
            blocker.rmdir()
            await until(lambda: sender.status().items_acked == 2)
        finally:
            task.cancel()
            await sender.aclose()
    assert fake.stored == agent.expected


def test_backoff_full_jitter_window_and_retry_after_floor():
    import random

    b = Backoff(base_s=1.0, cap_s=300.0, rng=random.Random(7))
    for failures in range(1, 15):
        ceiling = min(300.0, 2.0 ** failures)
        delays = [b.delay(failures) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # really spread over the window
        assert all(b.delay(failures, retry_after=120.0) >= 120.0 for _ in range(50))
    assert b.ceiling(100) == 300.0
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0)

"""MQTT transport end to end, without the database: agent ↔ Mosquitto ↔ bridge.

Real parts: our own Mosquitto (TLS and WebSocket-over-TLS listeners, the
dynamic-security plugin), accounts made by the server's provisioning code, the
agent's :class:`MqttTransport` (and its real :class:`Sender` and outbox for the
restart test), and the server's :class:`MqttBridge`.  Only ``receive_envelope``
is replaced, by :class:`MemoryServer`: it verifies, stores by the unique item
key and acknowledges exactly like the protocol says, in memory, so these tests
can count every item (the same paths through the real ``receive_envelope`` and
the database: server/tests/test_agents_mqtt.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pytest
from fleetroom.agents.mqtt_bridge import MqttBridge, push_command
from fleetroom.agents.mqtt_broker import ensure_bridge_account, provision_agent, revoke_agent
from fleetroom.config import MqttConfig
from fleetroom_agent.identity import AgentIdentity, CounterStore
from fleetroom_agent.outbox import Outbox
from fleetroom_agent.sender import Sender
from fleetroom_agent.transports.base import TransportError
from fleetroom_agent.transports.mqtt import MqttTransport
from fleetroom_protocol.envelope import SERVER, body_model, seal, split, verify
from fleetroom_protocol.messages import (
    AckRange,
    AgentState,
    BatchBody,
    Command,
    MqttSettings,
    PollBody,
    Reply,
    WireItem,
    topic_down,
    topic_up,
)
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey
from pydantic import SecretStr

from tests.support.mosquitto import Mosquitto, find_dynsec_plugin, find_mosquitto

IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    if find_mosquitto() is None or find_dynsec_plugin() is None:
        if IN_CI:
            pytest.fail("mosquitto with the dynamic-security plugin is required in CI")
        pytest.skip("mosquitto (with mosquitto_dynamic_security.so) is not installed")
    with Mosquitto() as b:
        yield b


def mqtt_config(broker: Mosquitto, *, url: str | None = None, protocol: str = "5",
                **extra: Any) -> MqttConfig:
    return MqttConfig(url=url or broker.mqtts_url, protocol=protocol,  # type: ignore[arg-type]
                      ca_file=broker.ca_file, bridge_password=SecretStr("bridge-secret-1"),
                      admin_username=broker.admin_username,
                      admin_password=SecretStr(broker.admin_password), timeout_seconds=10,
                      **extra)


@pytest.fixture(scope="module")
def cfg(broker: Mosquitto) -> MqttConfig:
    cfg = mqtt_config(broker)
    asyncio.run(ensure_bridge_account(cfg))
    return cfg


# --- a stand-in for receive_envelope ---------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int
    body: bytes = b""
    retry_after: float | None = None
    agent_id: str | None = None


class MemoryServer:
    """Verifies, stores by (agent, store, stream, seq), acknowledges what it stored."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.agents: dict[str, VerifyKey] = {}
        self.stored: dict[tuple[str, str, str, int], Any] = {}
        self.deliveries: Counter[tuple[str, str, str, int]] = Counter()
        self.received: list[tuple[str, str, str | None]] = []
        self.commands: dict[str, list[Command]] = {}
        self.busy: float | None = None
        self.delay = 0.0
        self.ctr = 0
        self.lock = threading.Lock()

    def receive(self, data: bytes, *, transport: str, source: str,
                expected_sender: str | None = None) -> Outcome:
        time.sleep(self.delay)
        with self.lock:
            self.received.append((transport, source, expected_sender))
            try:
                sealed = split(data)
                vk = self.agents[sealed.header.sender]
                verify(sealed, vk)
            except Exception:
                return Outcome(401)
            header = sealed.header
            if expected_sender != header.sender:
                return Outcome(403)
            if self.busy is not None:
                return Outcome(429, b"", self.busy, header.sender)
            body = body_model(sealed, BatchBody if header.kind == "batch" else PollBody)
            items: list[WireItem] = getattr(body, "items", [])
            for item in items:
                key = (header.sender, item.store, item.stream, item.seq)
                self.deliveries[key] += 1
                self.stored.setdefault(key, item.payload)  # the unique key
            reply = Reply(acked=ranges(items), commands=self.commands.pop(header.sender, []))
            return Outcome(200, self.seal(header.sender, reply, reply_to=header.ctr),
                           None, header.sender)

    def seal(self, agent_id: str, reply: Reply, *, reply_to: int | None,
             kind: str = "reply") -> bytes:
        self.ctr += 1
        return seal(reply, signing_key=self.key, sender=SERVER, to=agent_id, ctr=self.ctr,
                    kind=kind, reply_to=reply_to)  # type: ignore[arg-type]


def ranges(items: list[WireItem]) -> list[AckRange]:
    out: list[AckRange] = []
    for item in sorted(items, key=lambda i: (i.store, i.stream, i.seq)):
        last = out[-1] if out else None
        if last and (last.store, last.stream) == (item.store, item.stream) \
                and item.seq == last.last + 1:
            out[-1] = AckRange(store=last.store, stream=last.stream, first=last.first,
                               last=item.seq)
        else:
            out.append(AckRange(store=item.store, stream=item.stream, first=item.seq,
                                last=item.seq))
    return out


@dataclass
class Agent:
    agent_id: str
    key: SigningKey
    mqtt: MqttSettings


def new_agent(cfg: MqttConfig, server: MemoryServer, *, url: str | None = None) -> Agent:
    import uuid

    agent_id = str(uuid.uuid4())
    settings = provision_agent(agent_id, config=cfg)
    assert settings is not None
    if url is not None:
        settings = settings.model_copy(update={"url": url})
    key = SigningKey.generate()
    server.agents[agent_id] = key.verify_key
    return Agent(agent_id, key, settings)


def batch(agent: Agent, ctr: int, payloads: list[dict[str, Any]], *, store: str = "s1",
          first_seq: int = 1) -> bytes:
    body = BatchBody(items=[WireItem(store=store, stream="readings", seq=first_seq + n,
                                     priority=5, created_at=0.0, payload=p)
                            for n, p in enumerate(payloads)])
    return seal(body, signing_key=agent.key, sender=agent.agent_id, to=SERVER, ctr=ctr,
                kind="batch")


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        await asyncio.wait_for(bridge.connected.wait(), 15)
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 40)


async def eventually(predicate: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def raw_client(broker: Mosquitto, username: str, password: str, *,
               identifier: str | None = None) -> aiomqtt.Client:
    import ssl

    ctx = ssl.create_default_context(cafile=str(broker.ca_file))
    return aiomqtt.Client("127.0.0.1", broker.tls_port, username=username, password=password,
                          identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5,
                          tls_context=ctx, timeout=10)


# --- the tests --------------------------------------------------------------------------


@pytest.mark.parametrize(("listener", "protocol"), [("mqtts", "5"), ("wss", "5"),
                                                    ("mqtts", "3.1.1"), ("wss", "3.1.1")])
async def test_exchange_returns_the_bridges_reply(broker, cfg, listener, protocol):
    server = MemoryServer()
    agent = new_agent(cfg, server, url=broker.wss_url if listener == "wss" else None)
    bridge = MqttBridge(mqtt_config(broker, protocol=protocol), receive=server.receive)
    payloads = [{"serial": f"X{n}", "pages": 1000 + n} for n in range(3)]
    transport = MqttTransport(agent.mqtt, ca_file=broker.ca_file, protocol=protocol,  # type: ignore[arg-type]
                              reply_timeout_s=20)
    async with running(bridge):
        try:
            raw = await transport.exchange(batch(agent, 7, payloads))
        finally:
            await transport.aclose()
    sealed = split(raw)
    verify(sealed, server.key.verify_key)
    assert sealed.header.kind == "reply"
    assert sealed.header.to == agent.agent_id
    assert sealed.header.reply_to == 7
    reply = body_model(sealed, Reply)
    assert reply.acked == [AckRange(store="s1", stream="readings", first=1, last=3)]
    assert [server.stored[(agent.agent_id, "s1", "readings", n + 1)] for n in range(3)] \
        == payloads
    assert server.received == [("mqtt", f"mqtt:{agent.agent_id}", agent.agent_id)]
    assert agent.mqtt.url.startswith("wss://" if listener == "wss" else "mqtts://")


async def test_agent_reaches_only_its_own_topics(broker, cfg):
    server = MemoryServer()
    a, b = new_agent(cfg, server), new_agent(cfg, server)
    seen: list[tuple[str, bytes]] = []
    watcher = raw_client(broker, cfg.bridge_username, "bridge-secret-1")
    async with watcher:
        await watcher.subscribe("fleetroom/v1/agents/+/up", qos=1)

        async def watch() -> None:
            async for message in watcher.messages:
                seen.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]

        watching = asyncio.create_task(watch())
        client_a = raw_client(broker, a.agent_id, a.mqtt.password, identifier=a.agent_id)
        async with client_a:
            # A may not subscribe to B's down topic, nor to everything.
            for pattern in (topic_down(b.agent_id), "fleetroom/v1/agents/#", "#"):
                granted = await client_a.subscribe(pattern, qos=1)
                assert all(code.value >= 0x80 for code in granted), pattern  # type: ignore[union-attr]
            granted = await client_a.subscribe(topic_down(a.agent_id), qos=1)
            assert all(code.value < 0x80 for code in granted)  # type: ignore[union-attr]
            # A publishes into B's up topic (refused) and then into its own (delivered).
            await client_a.publish(topic_up(b.agent_id), b"forged by A", qos=1)
            await client_a.publish(topic_down(b.agent_id), b"fake reply by A", qos=1)
            await client_a.publish(topic_up(a.agent_id), b"marker from A", qos=1)
            await eventually(lambda: (topic_up(a.agent_id), b"marker from A") in seen)
            # The server publishes to B's down topic: A, subscribed only to its own, sees
            # nothing of it; a message to A's down topic does arrive (the path works).
            async with raw_client(broker, cfg.bridge_username, "bridge-secret-1") as srv:
                await srv.publish(topic_down(b.agent_id), b"for B only", qos=1)
                await srv.publish(topic_down(a.agent_id), b"for A", qos=1)
            got = []
            async with asyncio.timeout(10):
                async for message in client_a.messages:
                    got.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]
                    if message.payload == b"for A":
                        break
            assert got == [(topic_down(a.agent_id), b"for A")]
        await asyncio.sleep(0.3)
        watching.cancel()
    assert (topic_up(b.agent_id), b"forged by A") not in seen
    assert all(topic.endswith("/up") for topic, _ in seen)
    assert [p for t, p in seen if t == topic_up(a.agent_id)] == [b"marker from A"]
    # The broker stores only password hashes; the agent's password is in no file.
    text = broker.dynsec_file.read_text()
    assert a.mqtt.password not in text
    assert b.mqtt.password not in text
    client = next(c for c in broker.dynsec()["clients"] if c["username"] == a.agent_id)  # type: ignore[index]
    assert client["clientid"] == a.agent_id
    assert client["roles"] == [{"rolename": f"fleetroom-agent-{a.agent_id}", "priority": 0}]


async def test_a_client_id_or_password_not_its_own_is_refused(broker, cfg):
    server = MemoryServer()
    a, b = new_agent(cfg, server), new_agent(cfg, server)
    wrong = a.mqtt.model_copy(update={"password": a.mqtt.password[:-2] + "xy"})
    transport = MqttTransport(wrong, ca_file=broker.ca_file, connect_timeout_s=10)
    try:
        with pytest.raises(TransportError) as info:
            await transport.exchange(batch(a, 1, [{"n": 1}]))
    finally:
        await transport.aclose()
    assert info.value.code == "config"
    assert "refused the agent's credentials" in info.value.message
    # B's password does not open A's account, nor A's client id with B's account.
    for username, password, identifier in ((a.agent_id, b.mqtt.password, a.agent_id),
                                           (b.agent_id, b.mqtt.password, a.agent_id)):
        with pytest.raises(aiomqtt.MqttError):
            async with raw_client(broker, username, password, identifier=identifier):
                pass
    assert server.received == []


async def test_untrusted_broker_certificate_is_refused(broker, cfg, tmp_path):
    import trustme

    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    server = MemoryServer()
    agent = new_agent(cfg, server)
    transport = MqttTransport(agent.mqtt, ca_file=other_ca, connect_timeout_s=10)
    try:
        with pytest.raises(TransportError) as info:
            await transport.exchange(batch(agent, 1, [{"n": 1}]))
    finally:
        await transport.aclose()
    assert info.value.code == "tls"


async def test_pushed_command_reaches_on_push_between_requests(broker, cfg):
    server = MemoryServer()
    agent = new_agent(cfg, server)
    pushed: asyncio.Queue[bytes] = asyncio.Queue()
    transport = MqttTransport(agent.mqtt, ca_file=broker.ca_file, on_push=pushed.put)
    command = Command(id="cmd-1", kind="scan-now", issued_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
                      expires_in_s=600)
    envelope = server.seal(agent.agent_id, Reply(commands=[command]), reply_to=None,
                           kind="command")
    try:
        await transport.start()
        await eventually(lambda: transport.connected)
        assert await asyncio.to_thread(push_command, agent.agent_id, envelope, config=cfg)
        got = await asyncio.wait_for(pushed.get(), 10)
    finally:
        await transport.aclose()
    assert got == envelope
    sealed = split(got)
    verify(sealed, server.key.verify_key)
    assert sealed.header.kind == "command"
    assert body_model(sealed, Reply).commands == [command]


async def test_busy_server_is_reported_at_once_with_retry_after(broker, cfg):
    server = MemoryServer()
    server.busy = 42.0
    agent = new_agent(cfg, server)
    transport = MqttTransport(agent.mqtt, ca_file=broker.ca_file, reply_timeout_s=30)
    async with running(MqttBridge(cfg, receive=server.receive)):
        started = asyncio.get_running_loop().time()
        try:
            with pytest.raises(TransportError) as info:
                await transport.exchange(batch(agent, 3, [{"n": 1}]))
        finally:
            await transport.aclose()
    assert asyncio.get_running_loop().time() - started < 10  # not the 30 s timeout
    assert (info.value.code, info.value.status, info.value.retry_after) == ("busy", 429, 42.0)
    assert server.stored == {}


async def test_bad_payloads_never_stop_the_bridge(broker, cfg):
    server = MemoryServer()
    a, b = new_agent(cfg, server), new_agent(cfg, server)
    bridge = MqttBridge(cfg, receive=server.receive)
    transport = MqttTransport(a.mqtt, ca_file=broker.ca_file, reply_timeout_s=20)
    async with running(bridge):
        async with raw_client(broker, a.agent_id, a.mqtt.password,
                              identifier=a.agent_id) as client_a:
            for junk in (b"", b"not an envelope", b"FR1 " + b"A" * 5000,
                         batch(b, 1, [{"stolen": True}]),  # B's envelope on A's channel
                         json.dumps({"items": []}).encode()):
                await client_a.publish(topic_up(a.agent_id), junk, qos=1)
        await eventually(lambda: len(server.received) == 5)
        try:
            raw = await transport.exchange(batch(a, 2, [{"fine": True}]))
        finally:
            await transport.aclose()
    assert body_model(split(raw), Reply).acked == [
        AckRange(store="s1", stream="readings", first=1, last=1)]
    assert server.stored == {(a.agent_id, "s1", "readings", 1): {"fine": True}}
    assert bridge.handled == 6


async def test_several_bridges_share_the_agents_messages(broker, cfg):
    """Two bridges on the shared subscription: each envelope is handled by exactly
    one of them, both take a share, and every exchange gets its reply."""
    server = MemoryServer()
    agents = [new_agent(cfg, server) for _ in range(4)]
    first, second = (MqttBridge(cfg, receive=server.receive) for _ in range(2))
    transports = [MqttTransport(a.mqtt, ca_file=broker.ca_file, reply_timeout_s=20)
                  for a in agents]

    async def send_all(agent: Agent, transport: MqttTransport) -> list[bytes]:
        return [await transport.exchange(batch(agent, ctr, [{"n": ctr}], first_seq=ctr))
                for ctr in range(1, 6)]

    async with running(first), running(second):
        try:
            replies = await asyncio.gather(*(send_all(a, t)
                                             for a, t in zip(agents, transports, strict=True)))
        finally:
            for t in transports:
                await t.aclose()
    for agent, answers in zip(agents, replies, strict=True):
        for ctr, raw in enumerate(answers, start=1):
            sealed = split(raw)
            assert (sealed.header.to, sealed.header.reply_to) == (agent.agent_id, ctr)
    assert first.handled + second.handled == 20 == len(server.received)
    assert first.handled > 0
    assert second.handled > 0
    assert len(server.stored) == 20


async def test_revoked_agent_is_disconnected_and_locked_out(broker, cfg):
    server = MemoryServer()
    agent = new_agent(cfg, server)
    transport = MqttTransport(agent.mqtt, ca_file=broker.ca_file, connect_timeout_s=10)
    try:
        await transport.start()
        await eventually(lambda: transport.connected)
        assert await asyncio.to_thread(revoke_agent, agent.agent_id, config=cfg)
        await eventually(lambda: not transport.connected)
        with pytest.raises(TransportError) as info:
            await transport.exchange(batch(agent, 5, [{"n": 1}]))
    finally:
        await transport.aclose()
    assert info.value.code == "config"
    usernames = {c["username"] for c in broker.dynsec()["clients"]}  # type: ignore[index]
    assert agent.agent_id not in usernames
    assert await asyncio.to_thread(revoke_agent, agent.agent_id, config=cfg)  # idempotent


async def test_broker_restart_mid_delivery_loses_nothing(broker, cfg, tmp_path):
    """The real sender drains a real outbox over MQTT while the broker is killed and
    restarted (no persistence: sessions and in-flight messages are gone); every item
    reaches the server exactly once by its key, and the outbox ends empty."""
    server = MemoryServer()
    server.delay = 0.02  # a database's commit, roughly
    agent = new_agent(cfg, server)
    identity = AgentIdentity(agent_id=agent.agent_id, server_url="https://unused.invalid",
                             signing_key=agent.key, encryption_key=PrivateKey.generate(),
                             server_verify_key=server.key.verify_key,
                             server_public_key=PrivateKey.generate().public_key,
                             tenant="t", mqtt=agent.mqtt, data_dir=tmp_path)
    outbox = Outbox(tmp_path / "outbox.sqlite3", agent.agent_id)
    expected: dict[int, dict[str, int]] = {}

    def put(n: int) -> None:
        for i in range(n):
            payload = {"device": i % 7, "pages": len(expected) * 10 + i}
            seq = outbox.put("readings", json.dumps(payload).encode())
            expected[seq] = payload

    put(600)
    store = outbox.store_id
    transport = MqttTransport(agent.mqtt, ca_file=broker.ca_file, reply_timeout_s=5,
                              connect_timeout_s=5)

    async def on_reply(reply: Reply) -> None:
        return None

    from fleetroom_agent.backoff import Backoff

    sender = Sender(identity, outbox, [transport], AgentState, on_reply,
                    counter=CounterStore(tmp_path), max_items=10,
                    backoff=Backoff(base_s=0.2, cap_s=1.0))
    transport.on_push = sender.accept_push
    bridge = MqttBridge(cfg, receive=server.receive)
    stop = asyncio.Event()
    bridge_task = asyncio.create_task(bridge.run(stop))
    sending = asyncio.create_task(sender.run())
    try:
        await eventually(lambda: len(server.stored) >= 100, 30)
        assert outbox.stats().total_items > 0  # still mid-delivery
        await asyncio.to_thread(broker.restart, down_for=1.0)
        put(100)  # more data while the broker was away
        await eventually(lambda: outbox.stats().total_items == 0, 60)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        await sender.aclose()
        stop.set()
        await asyncio.wait_for(bridge_task, 40)
        outbox.close()
    keys = {(agent.agent_id, store, "readings", seq) for seq in expected}
    assert set(server.stored) == keys
    assert {k[3]: v for k, v in server.stored.items()} == expected
    assert broker.starts >= 2
    assert transport.connections >= 2  # it did lose the broker and came back

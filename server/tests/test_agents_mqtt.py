"""MQTT transport end to end through the server: enrollment issues broker credentials,
the agent's MqttTransport → our own Mosquitto → the real MqttBridge → the real
``receive_envelope`` → items and readings in the database; commands pushed on the
agent's own topic; revocation removes the broker account.

The agent is enrolled through the real enrollment service with keys made here;
the readings it sends are built in the test, and every assertion compares what
the server stored with what was sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest
from fleetroom.agents import signals
from fleetroom.agents.models import Agent, AgentCommand, ReceivedBatch, ReceivedItem
from fleetroom.agents.mqtt_bridge import MqttBridge, connect_signals
from fleetroom.agents.mqtt_broker import BrokerError, ensure_bridge_account
from fleetroom.agents.services import (
    do_issue_command,
    do_reenroll_agent,
    do_revoke_agent,
    enroll,
)
from fleetroom.config import MqttConfig
from fleetroom.core.scoping import SYSTEM
from fleetroom.fleet.models import Device
from fleetroom_agent.identity import AgentIdentity
from fleetroom_agent.transports.mqtt import MqttTransport
from fleetroom_protocol import envelope as env
from fleetroom_protocol.keys import decode_public_key, decode_verify_key
from fleetroom_protocol.messages import (
    AckRange,
    AgentState,
    EnrollResponse,
    PollBody,
    Reply,
    encode_batch_body,
    topic_down,
    topic_up,
)
from nacl.public import PrivateKey
from pydantic import SecretStr

from server.tests.test_agents_support import clear_limits, enroll_request, make_tree, new_token
from server.tests.test_api_support import T0, reading
from tests.support.mosquitto import Mosquitto, find_dynsec_plugin, find_mosquitto

IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.timeout(180)]
BRIDGE_PASSWORD = "bridge-secret-for-tests"


@pytest.fixture(scope="module")
def broker():
    if find_mosquitto() is None or find_dynsec_plugin() is None:
        if IN_CI:
            pytest.fail("mosquitto with the dynamic-security plugin is required in CI")
        pytest.skip("mosquitto (with mosquitto_dynamic_security.so) is not installed")
    with Mosquitto() as b:
        yield b


def _cfg(broker: Mosquitto, **extra) -> MqttConfig:
    values = {"url": broker.mqtts_url, "agent_url": broker.wss_url, "ca_file": broker.ca_file,
              "bridge_password": SecretStr(BRIDGE_PASSWORD),
              "admin_username": broker.admin_username,
              "admin_password": SecretStr(broker.admin_password), "timeout_seconds": 10}
    return MqttConfig(**{**values, **extra})


@pytest.fixture
def mqtt_cfg(broker, settings):
    """[mqtt] configured for this broker, and the bridge's signal receivers connected."""
    cfg = _cfg(broker)
    settings.CONFIG = settings.CONFIG.model_copy(update={"mqtt": cfg})
    asyncio.run(ensure_bridge_account(cfg))
    connect_signals()
    yield cfg
    for sig, uid in ((signals.enroll_extras, "fleetroom.mqtt.enroll"),
                     (signals.agent_changed, "fleetroom.mqtt.changed"),
                     (signals.command_issued, "fleetroom.mqtt.command")):
        sig.disconnect(dispatch_uid=uid)


@pytest.fixture
def site():
    clear_limits()
    yield make_tree()["s1"]
    clear_limits()


class MqttAgent:
    """A really enrolled agent (keys made here) with the broker settings it was given."""

    def __init__(self, tenant, token: str | None = None) -> None:
        req, self.signing = enroll_request(token or new_token(tenant))
        self.response: EnrollResponse = enroll(req, "198.51.100.7")
        assert self.response.mqtt is not None
        self.mqtt = self.response.mqtt
        self.agent_id = self.response.agent_id
        self.identity = AgentIdentity(
            agent_id=self.agent_id, server_url="https://fleet.test", signing_key=self.signing,
            encryption_key=PrivateKey.generate(),
            server_verify_key=decode_verify_key(self.response.server_signing_key),
            server_public_key=decode_public_key(self.response.server_encryption_key),
            tenant=self.response.tenant, mqtt=self.mqtt)
        self.store = "0123456789abcdef"
        self.ctr = 0

    def batch(self, serials: list[str], first_seq: int = 1) -> tuple[bytes, int]:
        items = [(self.store, "readings", first_seq + n, 0, 1_700_000_000.0,
                  reading(s, T0 + timedelta(hours=first_seq + n), total=1000 + first_seq + n)
                  .to_json().encode()) for n, s in enumerate(serials)]
        self.ctr += 1
        body = encode_batch_body(items, AgentState(hostname="pc-1", version="0.1.0"))
        return env.seal(body, signing_key=self.signing, sender=self.agent_id, to=env.SERVER,
                        ctr=self.ctr, kind="batch"), self.ctr

    def poll(self) -> tuple[bytes, int]:
        self.ctr += 1
        return env.seal(PollBody(state=AgentState(hostname="pc-1")), signing_key=self.signing,
                        sender=self.agent_id, to=env.SERVER, ctr=self.ctr, kind="poll"), self.ctr

    def verified(self, raw: bytes, *, reply_to: int | None, kind: str = "reply") -> Reply:
        sealed = env.split(raw)
        env.verify(sealed, self.identity.server_verify_key)
        assert (sealed.header.sender, sealed.header.to, sealed.header.kind) == (
            env.SERVER, self.agent_id, kind)
        assert sealed.header.reply_to == reply_to
        return env.body_model(sealed, Reply)

    def transport(self, broker: Mosquitto, **kwargs) -> MqttTransport:
        return MqttTransport.from_identity(self.identity, ca_file=broker.ca_file, **kwargs)


def _stored(agent: MqttAgent) -> list[tuple[str, str, int]]:
    return sorted(ReceivedItem.objects.filter(agent__public_id=agent.agent_id)
                  .values_list("store", "stream", "seq"))


async def _with_bridge(cfg: MqttConfig, scenario):
    stop = asyncio.Event()
    bridge = MqttBridge(cfg)
    task = asyncio.create_task(bridge.run(stop))
    try:
        await asyncio.wait_for(bridge.connected.wait(), 15)
        return await scenario()
    finally:
        stop.set()
        await asyncio.wait_for(task, 40)


# --- the tests --------------------------------------------------------------------------


def test_batches_over_wss_are_stored_once_and_acknowledged(broker, mqtt_cfg, site):
    agent = MqttAgent(site)
    assert (agent.mqtt.username, agent.mqtt.url) == (agent.agent_id, broker.wss_url)
    assert (agent.mqtt.topic_up, agent.mqtt.topic_down) == (topic_up(agent.agent_id),
                                                            topic_down(agent.agent_id))
    serials = ["M1X001", "M1X002", "M1X003"]
    first, first_ctr = agent.batch(serials)
    again, again_ctr = agent.batch(serials)  # the same items re-sent in a new envelope

    async def scenario():
        transport = agent.transport(broker, reply_timeout_s=30)
        try:
            return [await transport.exchange(first), await transport.exchange(again)]
        finally:
            await transport.aclose()

    replies = asyncio.run(_with_bridge(mqtt_cfg, scenario))
    acked = [AckRange(store=agent.store, stream="readings", first=1, last=3)]
    assert agent.verified(replies[0], reply_to=first_ctr).acked == acked
    assert agent.verified(replies[1], reply_to=again_ctr).acked == acked
    assert _stored(agent) == [(agent.store, "readings", s) for s in (1, 2, 3)]
    batches = list(ReceivedBatch.objects.filter(agent__public_id=agent.agent_id)
                   .order_by("ctr").values_list("ctr", "transport", "new_items", "source"))
    source = f"mqtt:{agent.agent_id}"
    assert batches == [(first_ctr, "mqtt", 3, source), (again_ctr, "mqtt", 0, source)]
    assert sorted(Device.objects.filter(serial__in=serials).values_list("serial", flat=True)) \
        == serials
    row = Agent.objects.get(public_id=agent.agent_id)
    assert (row.last_transport, row.policy_violations) == ("mqtt", 0)


def test_command_is_pushed_to_an_agent_that_talks_mqtt(broker, mqtt_cfg, site):
    agent = MqttAgent(site)
    quiet = MqttAgent(site)  # enrolled, but never sent anything over MQTT
    poll, poll_ctr = agent.poll()

    def issue(to: MqttAgent, args: dict) -> AgentCommand:
        return do_issue_command(Agent.objects.get(public_id=to.agent_id), "scan-now", args,
                                acting_user=SYSTEM)

    async def scenario():
        pushed: asyncio.Queue[bytes] = asyncio.Queue()
        transport = agent.transport(broker, on_push=pushed.put)
        try:
            agent.verified(await transport.exchange(poll), reply_to=poll_ctr)
            command = await asyncio.to_thread(issue, agent, {"ranges": ["10.0.0.0/24"]})
            not_pushed = await asyncio.to_thread(issue, quiet, {})
            return command, not_pushed, await asyncio.wait_for(pushed.get(), 15)
        finally:
            await transport.aclose()

    command, not_pushed, raw = asyncio.run(_with_bridge(mqtt_cfg, scenario))
    reply = agent.verified(raw, reply_to=None, kind="command")
    assert [(c.id, c.kind, c.args) for c in reply.commands] == [
        (command.command_id, "scan-now", {"ranges": ["10.0.0.0/24"]})]
    assert AgentCommand.objects.get(pk=command.pk).status == "delivered"
    # The other agent's command waits for its next request (it may not be listening).
    assert AgentCommand.objects.get(pk=not_pushed.pk).status == "pending"


def test_revocation_deletes_the_account_and_reenrollment_replaces_the_password(
        broker, mqtt_cfg, site):
    agent = MqttAgent(site)
    row = Agent.objects.get(public_id=agent.agent_id)
    _, token = do_reenroll_agent(row, acting_user=SYSTEM)
    renewed = MqttAgent(site, token=token)
    assert renewed.agent_id == agent.agent_id
    assert renewed.mqtt.password != agent.mqtt.password

    async def login(password: str) -> bool:
        try:
            async with aiomqtt.Client("127.0.0.1", broker.tls_port, username=agent.agent_id,
                                      password=password, identifier=agent.agent_id,
                                      tls_context=ssl.create_default_context(
                                          cafile=str(broker.ca_file)),
                                      timeout=10):
                return True
        except aiomqtt.MqttError:
            return False

    assert asyncio.run(login(renewed.mqtt.password))
    assert not asyncio.run(login(agent.mqtt.password))  # the old one is gone
    do_revoke_agent(row, acting_user=SYSTEM)
    assert not asyncio.run(login(renewed.mqtt.password))
    names = {c["username"] for c in broker.dynsec()["clients"]}
    roles = {r["rolename"] for r in broker.dynsec()["roles"]}
    assert agent.agent_id not in names
    assert f"fleetroom-agent-{agent.agent_id}" not in roles


def test_enrollment_is_refused_whole_when_the_broker_is_down(broker, settings, site):
    cfg = _cfg(broker, url="mqtts://127.0.0.1:9", agent_url=None, timeout_seconds=2)
    settings.CONFIG = settings.CONFIG.model_copy(update={"mqtt": cfg})
    connect_signals()
    try:
        token = new_token(site)
        req, _ = enroll_request(token)
        with pytest.raises(BrokerError, match="cannot reach the broker"):
            enroll(req, "198.51.100.7")
    finally:
        signals.enroll_extras.disconnect(dispatch_uid="fleetroom.mqtt.enroll")
        signals.agent_changed.disconnect(dispatch_uid="fleetroom.mqtt.changed")
        signals.command_issued.disconnect(dispatch_uid="fleetroom.mqtt.command")
    assert not Agent.objects.filter(tenant=site).exists()
    # The token was not used up: the agent can enroll once the broker is back.
    from fleetroom.agents.models import EnrollmentToken

    assert EnrollmentToken.objects.get(tenant=site).uses == 0


def test_bridge_command_sets_up_its_account_and_stops_on_sigterm(broker, tmp_path: Path):
    user = "fleetroom-bridge-cli"
    env_vars = {**os.environ, "FLEETROOM_DATA_DIR": str(tmp_path),
                "FLEETROOM_SECRET_KEY": "cli-test-" + "k" * 60,
                "FLEETROOM_MQTT_URL": broker.mqtts_url,
                "FLEETROOM_MQTT_CA_FILE": str(broker.ca_file),
                "FLEETROOM_MQTT_BRIDGE_USERNAME": user,
                "FLEETROOM_MQTT_BRIDGE_PASSWORD": "cli-bridge-secret",
                "FLEETROOM_MQTT_ADMIN_USERNAME": broker.admin_username,
                "FLEETROOM_MQTT_ADMIN_PASSWORD": broker.admin_password}
    env_vars.pop("DJANGO_SETTINGS_MODULE", None)
    env_vars.pop("FLEETROOM_DATABASE_URL", None)
    exe = str(Path(sys.executable).parent / "fleetroom")
    proc = subprocess.Popen([exe, "mqtt-bridge"], env=env_vars, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while f"u'{user}'" not in broker.log:
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, broker.log[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read().decode()  # type: ignore[union-attr]
    assert code == 0, output
    assert f"broker account {user} is ready" in output
    assert "subscribed to $share/fleetroom/fleetroom/v1/agents/+/up" in output
    client = next(c for c in broker.dynsec()["clients"] if c["username"] == user)
    assert client["roles"] == [{"rolename": "fleetroom-bridge", "priority": 0}]
    assert "cli-bridge-secret" not in broker.dynsec_file.read_text()


def test_bridge_command_without_mqtt_config_says_what_to_set(tmp_path: Path):
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_MQTT")}
    env_vars.update(FLEETROOM_DATA_DIR=str(tmp_path), FLEETROOM_SECRET_KEY="x" * 60)
    env_vars.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run([str(Path(sys.executable).parent / "fleetroom"), "mqtt-bridge"],
                            env=env_vars, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert "[mqtt] url" in result.stderr

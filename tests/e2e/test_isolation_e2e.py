"""Isolation between tenants and agents, against the real server over HTTPS.

Two agents are enrolled for two customers' sites with tokens from ``fleetroom
manage agent_token``; agent B runs (``fleetroom-agent run``) against its own two
simulated printers so tenant B has real data.  Agent A then sends what a
compromised or buggy agent could send — signed with A's *real* key from its
``identity.json``, posted to ``/agent/v1/messages`` like the HTTPS transport does —
and the tests check in the server's database that nothing landed in tenant B,
nothing of B changed, and B was not blamed.

MQTT topics: the broker ACLs (an agent may subscribe only to its own ``down``
topic and publish only to its own ``up`` topic, accounts made by the server's
provisioning code) are proven by
``tests/e2e/test_mqtt_transport.py::test_agent_reaches_only_its_own_topics`` and
``::test_a_client_id_or_password_not_its_own_is_refused``; here one check
repeats the subscription refusal with the accounts the running server made for
these two enrolled agents.

Commands: a command the server sealed for agent A (``push_commands``, the MQTT
push path) is handed to agent B's :class:`~fleetroom_agent.sender.Sender` —
the code that verifies every reply and push in ``fleetroom-agent run`` — and must
be refused, while A's own sender accepts it.
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleetroom_agent.identity import AgentIdentity, CounterStore
from fleetroom_agent.outbox import Outbox
from fleetroom_agent.sender import ReplyRejected, Sender
from fleetroom_agent.transports.https import HttpsTransport
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC
from fleetroom_protocol import Reading
from fleetroom_protocol.envelope import SERVER, body_model, seal, split, verify
from fleetroom_protocol.messages import (
    CONTENT_TYPE,
    PATH_MESSAGES,
    AgentState,
    BatchBody,
    CommandResult,
    Reply,
    WireItem,
    topic_down,
)

from tests.support.e2e_agent import AgentProcess
from tests.support.e2e_checks import agent_row, wait_for_devices
from tests.support.e2e_expect import expected
from tests.support.e2e_fleet import SimFleet, real_recording
from tests.support.e2e_stack import Stack, need_broker

pytestmark = [pytest.mark.slow, pytest.mark.snmpsim, pytest.mark.xdist_group("e2e-stack"),
              pytest.mark.timeout(300)]


@dataclass
class Tenants:
    """Agent A (enrolled, not running) and agent B (enrolled, ran once) with B's data."""

    stack: Stack
    a: AgentProcess
    b: AgentProcess
    site_a: int
    site_b: int
    b_weak_host: str
    b_serial: str
    b_manufacturer: str

    def snapshot_b(self) -> dict[str, Any]:
        """Everything stored for tenant B and agent B, to compare before/after."""
        q = self.stack.server.query
        b_pk = agent_row(self.stack.server, self.b.agent_id or "").pk
        return {
            "readings": [dict(r) for r in q(
                "SELECT id, device_id, tenant_id, agent_id, taken_at FROM fleet_reading "
                "WHERE tenant_id = ? ORDER BY id", (self.site_b,))],
            "counters": [dict(r) for r in q(
                "SELECT id, reading_id, name, value FROM fleet_countervalue WHERE tenant_id = ?"
                " ORDER BY id", (self.site_b,))],
            "alerts": [dict(r) for r in q(
                "SELECT id, device_id, key, closed_at FROM fleet_alertrecord WHERE tenant_id = ?"
                " ORDER BY id", (self.site_b,))],
            "items": [dict(r) for r in q(
                "SELECT id, store, stream, seq, batch_id, state FROM agents_receiveditem "
                "WHERE agent_id = ? ORDER BY id", (b_pk,))],
            "batches": [r["id"] for r in q(
                "SELECT id FROM agents_receivedbatch WHERE agent_id = ? ORDER BY id", (b_pk,))],
            "agent": [dict(r) for r in q(
                "SELECT status, policy_violations, replay_state FROM agents_agent WHERE id = ?",
                (b_pk,))],
        }



@pytest.fixture(scope="module")
def tenants(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    server = stack.server
    base = tmp_path_factory.mktemp("isolation")
    site_a, site_b = stack.sites["tenant-a"], stack.sites["tenant-b"]
    strong = SYNTHETIC / "demo-konica-c300i.snmprec"
    weak = real_recording("okilan")  # sysDescr + sysObjectID only: identified by its address
    exp_strong = expected("b-strong", strong, "konica-minolta")
    assert expected("b-weak", weak, "oki").serial is None
    with SimFleet({"b-strong": strong, "b-weak": weak}) as fleet:
        a = AgentProcess(base, "agent-a", targets=["127.0.0.1:9"])
        b = AgentProcess(base, "agent-b", targets=[d.target for d in fleet.devices.values()])
        a.enroll(server.url, stack.token("tenant-a"), stack.ca_bundle(a.base))
        b.enroll(server.url, stack.token("tenant-b"), stack.ca_bundle(b.base))
        b.start()
        try:
            wait_for_devices(server, site_b, 2, timeout=90)
            b.wait_status(lambda d: d["queue_items"] == 0 and d["last_ack_at"], timeout=30,
                          what="B's outbox acknowledged")
        finally:
            b.stop()
        yield Tenants(stack, a, b, site_a, site_b, fleet.devices["b-weak"].host,
                      exp_strong.serial or "", exp_strong.manufacturer or "")


# --- helpers ---------------------------------------------------------------------------


def post(stack: Stack, envelope: bytes) -> httpx.Response:
    """What the HTTPS transport does: POST the envelope to /agent/v1/messages."""
    ctx = ssl.create_default_context(cafile=str(stack.server.ca_file))
    with httpx.Client(verify=ctx, timeout=30) as client:
        return client.post(stack.server.url + PATH_MESSAGES, content=envelope,
                           headers={"content-type": CONTENT_TYPE, "accept": CONTENT_TYPE})


def signed_reply(identity: AgentIdentity, response: httpx.Response, ctr: int) -> Reply:
    """The server's reply, verified as the agent's sender does."""
    sealed = split(response.content)
    verify(sealed, identity.server_verify_key)
    assert (sealed.header.sender, sealed.header.to, sealed.header.reply_to) == (
        SERVER, identity.agent_id, ctr)
    return body_model(sealed, Reply)


def reading(target: str, ip: str, **identity: Any) -> dict[str, Any]:
    """A plausible reading as an agent would send it."""
    doc = Reading.model_validate({
        "taken_at": datetime.now(UTC), "target": target, "snmp_version": "2c",
        "credential": "site-v2c",
        "identity": {"ip": ip, "sys_descr": "claimed by agent A", **identity}})
    return dict(Reading.model_validate_json(doc.to_json()).model_dump(mode="json",
                                                                       by_alias=True))


def item(store: str, stream: str, seq: int, payload: Any) -> WireItem:
    return WireItem(store=store, stream=stream, seq=seq, priority=2, created_at=time.time(),
                    payload=payload)


def issue_command(stack: Stack, agent_id: str) -> str:
    """A ``diagnostics`` command for the agent, issued through the server's service."""
    return str(stack.server.manage_python(f"""
import json
from fleetroom.agents.models import Agent
from fleetroom.agents.services import do_issue_command
from fleetroom.core.scoping import SYSTEM
cmd = do_issue_command(Agent.objects.get(public_id={agent_id!r}), "diagnostics",
                       acting_user=SYSTEM)
print(json.dumps(cmd.command_id))
"""))


# --- the tests ------------------------------------------------------------------------


def test_a_cannot_sign_as_b_and_b_is_not_blamed(tenants: Tenants) -> None:
    """An envelope naming B as sender but signed with A's key: 401, no body, nothing
    stored, and neither B nor A gets a policy violation (unauthenticated traffic can
    never suspend an agent)."""
    ident_a = AgentIdentity.load(tenants.a.data_dir)
    before = tenants.snapshot_b()
    ctr = CounterStore(tenants.a.data_dir).next()
    forged = seal(BatchBody(items=[item("b-store", "readings", 1, reading(
        "127.0.0.1:161", tenants.b_weak_host))], state=AgentState()),
        signing_key=ident_a.signing_key, sender=tenants.b.agent_id or "", to=SERVER, ctr=ctr,
        kind="batch")
    response = post(tenants.stack, forged)
    assert response.status_code == 401
    assert response.content == b""
    assert tenants.snapshot_b() == before
    a = agent_row(tenants.stack.server, ident_a.agent_id)
    assert (a.status, a.policy_violations) == ("active", 0)


def test_a_batch_claiming_b_lands_in_a_or_nowhere(tenants: Tenants) -> None:
    """Agent A's own, validly signed batch that claims B's things: B's outbox store and
    sequence numbers, B's weak device's address, B's printer's serial, a ``tenant``
    field naming B, a result for B's command.  Everything accepted is filed under A
    and tenant A; the rest is refused item by item; B's rows do not change."""
    server, stack = tenants.stack.server, tenants.stack
    ident_a = AgentIdentity.load(tenants.a.data_dir)
    b_pk = agent_row(server, tenants.b.agent_id or "").pk
    b_item = server.query("SELECT store, stream, seq FROM agents_receiveditem WHERE agent_id = ?"
                          " ORDER BY id LIMIT 1", (b_pk,))[0]
    b_command = issue_command(stack, tenants.b.agent_id or "")
    before = tenants.snapshot_b()
    weak_claim = reading(f"{tenants.b_weak_host}:161", tenants.b_weak_host)
    serial_claim = reading("127.0.0.1:161", "127.0.0.1", serial=tenants.b_serial,
                           manufacturer=tenants.b_manufacturer)
    tenant_claim = reading("127.0.0.1:162", "127.0.0.1") | {"tenant": tenants.site_b}
    result_claim = CommandResult(command_id=b_command, outcome="done", detail="not mine")
    items = [item(b_item["store"], b_item["stream"], b_item["seq"], weak_claim),
             item(b_item["store"], b_item["stream"], b_item["seq"] + 1, serial_claim),
             item(b_item["store"], b_item["stream"], b_item["seq"] + 2, tenant_claim),
             item(b_item["store"], "results", 1,
                  result_claim.model_dump(mode="json", by_alias=True))]
    ctr = CounterStore(tenants.a.data_dir).next()
    response = post(stack, seal(BatchBody(items=items, state=AgentState()),
                                signing_key=ident_a.signing_key, sender=ident_a.agent_id,
                                to=SERVER, ctr=ctr, kind="batch"))
    assert response.status_code == 200, response.content[:300]
    reply = signed_reply(ident_a, response, ctr)
    acked = {(r.store, r.stream, seq) for r in reply.acked for seq in range(r.first, r.last + 1)}
    assert acked == {(i.store, i.stream, i.seq) for i in items}  # committed, as A's

    a_pk = agent_row(server, ident_a.agent_id).pk
    rows = server.wait_for(
        "SELECT stream, seq, state, error FROM agents_receiveditem WHERE agent_id = ? "
        "ORDER BY seq, stream", (a_pk,), lambda r: r and all(x["state"] != "pending" for x in r),
        timeout=60, what="A's items filed")
    states = {(r["stream"], r["seq"]): (r["state"], r["error"]) for r in rows}
    seq = b_item["seq"]
    assert states[("readings", seq)] == ("done", "")
    # B's printer by its serial: A is another dealer's agent, so the reading is refused
    # (the printer would otherwise move to A with all its future readings).
    assert states[("readings", seq + 1)][0] == "problem"
    assert "another dealer" in states[("readings", seq + 1)][1]
    assert tenants.b_serial in states[("readings", seq + 1)][1]
    assert states[("readings", seq + 2)][0] == "problem"
    assert "tenant" in states[("readings", seq + 2)][1]
    assert states[("results", 1)] == ("problem", "result for a command this agent was not given")

    # B: nothing changed, its command still waits for B.
    assert tenants.snapshot_b() == before
    (cmd,) = server.query("SELECT status, result_at FROM agents_agentcommand WHERE "
                          "command_id = ?", (b_command,))
    assert (cmd["status"], cmd["result_at"]) == ("pending", None)
    # A: one reading, in tenant A; B's weak device got a twin in A, not a reading.
    a_readings = server.query("SELECT tenant_id, device_id FROM fleet_reading WHERE "
                              "agent_id = ?", (a_pk,))
    assert [r["tenant_id"] for r in a_readings] == [tenants.site_a]
    keys = {r["identity_key"]: r["tenant_id"] for r in server.query(
        "SELECT identity_key, tenant_id FROM fleet_device WHERE identity_key LIKE 'address/%'")}
    assert keys[f"address/{tenants.site_a}/{tenants.b_weak_host}"] == tenants.site_a
    assert keys[f"address/{tenants.site_b}/{tenants.b_weak_host}"] == tenants.site_b
    assert not server.query("SELECT id FROM fleet_reading WHERE agent_id = ? AND tenant_id = ?",
                            (a_pk, tenants.site_b))
    # B's printer stays with B; the claim is a security event of agent A.
    (printer,) = server.query("SELECT tenant_id FROM fleet_device WHERE serial = ?",
                              (tenants.b_serial,))
    assert printer["tenant_id"] == tenants.site_b
    claims = server.query("SELECT tenant_id, agent_id, detail FROM agents_securityevent "
                          "WHERE kind = 'device_claimed'")
    assert [(c["tenant_id"], c["agent_id"]) for c in claims] == [(tenants.site_a, a_pk)]
    assert tenants.b_serial in claims[0]["detail"]


def test_a_message_addressed_to_b_is_a_violation_of_a(tenants: Tenants) -> None:
    """A validly signed envelope of A addressed to agent B instead of the server:
    refused (403, signed reply to A), counted against A only."""
    server = tenants.stack.server
    ident_a = AgentIdentity.load(tenants.a.data_dir)
    before_a = agent_row(server, ident_a.agent_id).policy_violations
    before_b = tenants.snapshot_b()
    ctr = CounterStore(tenants.a.data_dir).next()
    response = post(tenants.stack, seal(BatchBody(items=[], state=AgentState()),
                                        signing_key=ident_a.signing_key,
                                        sender=ident_a.agent_id, to=tenants.b.agent_id or "",
                                        ctr=ctr, kind="batch"))
    assert response.status_code == 403
    signed_reply(ident_a, response, ctr)
    assert agent_row(server, ident_a.agent_id).policy_violations == before_a + 1
    assert tenants.snapshot_b() == before_b


async def test_a_command_for_a_is_refused_by_b(tenants: Tenants, tmp_path: Path) -> None:
    """The server seals a command for A (the MQTT push path, ``push_commands``); B's
    sender refuses it, A's accepts it and hands the command on."""
    stack = tenants.stack
    ident_a = AgentIdentity.load(tenants.a.data_dir)
    ident_b = AgentIdentity.load(tenants.b.data_dir)
    command_id = issue_command(stack, ident_a.agent_id)
    sealed_b64 = stack.server.manage_python(f"""
import base64, json
from fleetroom.agents.models import Agent
from fleetroom.agents.receive import push_commands
raw = push_commands(Agent.objects.get(public_id={ident_a.agent_id!r}))
print(json.dumps(base64.b64encode(raw).decode()))
""")
    envelope = base64.b64decode(sealed_b64)
    assert split(envelope).header.to == ident_a.agent_id

    async def accept(identity: AgentIdentity, name: str) -> tuple[list[Reply], Any]:
        handed: list[Reply] = []

        async def on_reply(reply: Reply) -> None:
            handed.append(reply)

        (tmp_path / name).mkdir()
        outbox = Outbox.in_data_dir(tmp_path / name, identity.agent_id)
        sender = Sender(identity, outbox, [HttpsTransport(identity.server_url,
                                                          ca_file=identity.ca_file)],
                        AgentState, on_reply, counter=CounterStore(tmp_path / name))
        try:
            return handed, await sender.accept_push(envelope)
        except ReplyRejected as exc:
            return handed, exc
        finally:
            await sender.aclose()
            outbox.close()

    handed_b, outcome_b = await accept(ident_b, "b")
    assert isinstance(outcome_b, ReplyRejected)
    assert f"addressed to agent {ident_a.agent_id!r}, not to this agent" in str(outcome_b)
    assert handed_b == []
    handed_a, outcome_a = await accept(ident_a, "a")
    assert isinstance(outcome_a, Reply)
    assert [c.id for c in outcome_a.commands] == [command_id]
    assert handed_a == [outcome_a]


async def test_a_cannot_subscribe_to_b_topics_on_the_broker(tenants: Tenants) -> None:
    """With the broker account the server made for A at enrollment: B's ``down``
    topic (where B's commands are pushed) is refused, A's own is granted."""
    import aiomqtt

    broker = need_broker(tenants.stack)
    mqtt_a = tenants.a.identity()["mqtt"]
    b_id = tenants.b.agent_id or ""
    ctx = ssl.create_default_context(cafile=str(broker.ca_file))
    async with aiomqtt.Client("127.0.0.1", port=broker.tls_port, username=mqtt_a["username"],
                              password=mqtt_a["password"], identifier=mqtt_a["username"],
                              tls_context=ctx, protocol=aiomqtt.ProtocolVersion.V5,
                              timeout=10) as client:
        refused = await client.subscribe(topic_down(b_id), qos=1)
        granted = await client.subscribe(topic_down(mqtt_a["username"]), qos=1)
    assert all(code.value >= 0x80 for code in refused)  # type: ignore[union-attr]
    assert all(code.value < 0x80 for code in granted)  # type: ignore[union-attr]
    assert mqtt_a["topic_down"] == topic_down(mqtt_a["username"])

"""The runtime with the real sender and HTTPS transport against the protocol-faithful fake
server of the delivery tests: commands ride on replies, are judged by the reply
envelope's server time (the agent's clock is 24 years off from the server's here), run
once although every reply repeats them, and their results reach the server; a newer
schedule in a reply is taken and persisted.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleetroom_agent.identity import AgentIdentity, CounterStore
from fleetroom_agent.runtime.app import Runtime, RuntimeParts, ServerTimeTap
from fleetroom_agent.runtime.config import parse_config
from fleetroom_agent.runtime.scheduler import SCHEDULE_FILE
from fleetroom_agent.sender import Sender
from fleetroom_agent.transports.https import HttpsTransport
from fleetroom_protocol.envelope import SERVER, seal
from fleetroom_protocol.messages import Command, CommandResult, Reply, Schedule
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from agent.tests.test_sender_fakeserver import FakeFleetroom, serve_app

pytestmark = pytest.mark.timeout(120)

AGENT = "0b4f0f5e-8d0c-4c1e-9a57-2f1b7f6f0004"
SERVER_NOW = datetime(2001, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class ServerIn2001(FakeFleetroom):
    """The fake server, whose clock (in every reply's header) says 2001."""

    clock: datetime = SERVER_NOW
    seen_ts: list[datetime] = field(default_factory=list)

    def seal_reply(self, reply: Reply, *, to: str, reply_to: int | None,
                   key: SigningKey | None = None, kind: str = "reply") -> bytes:
        self.server_ctr += 1
        self.seen_ts.append(self.clock)
        return seal(reply, signing_key=key or self.signing_key, sender=SERVER, to=to,
                    ctr=self.server_ctr, kind=kind, reply_to=reply_to,  # type: ignore[arg-type]
                    now=self.clock)


def stored_results(server: FakeFleetroom) -> dict[str, CommandResult]:
    out = {}
    for (_, _, stream, _), payload in server.stored.items():
        if stream == "results":
            res = CommandResult.model_validate(json.loads(payload))
            assert res.command_id not in out, "a result arrived twice"
            out[res.command_id] = res
    return out


async def test_commands_and_schedule_through_the_real_sender(tmp_path: Path):
    server = ServerIn2001()
    agent_key = SigningKey.generate()
    server.add_agent(AGENT, agent_key.verify_key)
    server.commands = [
        Command(id="diag-1", kind="diagnostics", issued_at=SERVER_NOW - timedelta(seconds=30),
                expires_in_s=300),
        Command(id="old-1", kind="diagnostics", issued_at=SERVER_NOW - timedelta(hours=1),
                expires_in_s=300),
        Command(id="far-1", kind="read-device", args={"target": "10.9.9.9"},
                issued_at=SERVER_NOW, expires_in_s=300),
    ]
    server.schedule = Schedule(version=5, status_poll_s=600, command_poll_s=30)
    async with serve_app(server) as base:
        identity = AgentIdentity(
            agent_id=AGENT, server_url=base, signing_key=agent_key,
            encryption_key=PrivateKey.generate(),
            server_verify_key=server.signing_key.verify_key,
            server_public_key=server.encryption_key.public_key, tenant="acme",
            schedule=Schedule(version=1), data_dir=tmp_path)
        counter = CounterStore(tmp_path)
        transport = ServerTimeTap(HttpsTransport(base))

        def make_sender(outbox, state, on_reply):
            return Sender(identity, outbox, [transport], state, on_reply, counter=counter)

        config = parse_config('[scan]\ntargets = ["127.0.0.1"]\n[status_page]\nenabled = false\n'
                              '[[credentials]]\nname = "public"\n')
        rt = Runtime(config, tmp_path, AGENT,
                     RuntimeParts(make_sender, identity=identity, counter=counter))
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run(stop))
        try:
            async with asyncio.timeout(60):
                while len(stored_results(server)) < 3 or rt.outbox.stats().total_items:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # further replies repeat the commands: still no rerun
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    got = stored_results(server)
    assert got["diag-1"].outcome == "done"       # fresh by the server's clock
    assert got["diag-1"].data["agent_id"] == AGENT
    assert got["old-1"].outcome == "expired"     # stale by the server's clock
    assert got["far-1"].outcome == "refused"     # outside the local allowlist
    assert len(server.seen_ts) >= 2              # the commands came more than once
    # the newer schedule from the reply is in force and on disk
    assert rt.schedule.schedule.version == 5
    assert json.loads((tmp_path / SCHEDULE_FILE).read_text())["status_poll_s"] == 600
    # every item was acknowledged and deleted
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["outbox"]["queue_items"] == 0
    assert state["last_ack_at"] is not None

"""Commands through the real runtime: at most once, expired by the server's clock, never
beyond local policy.  The only stand-in is the sender (it would need a server); the
replies carry real server-signed envelope headers, results land in the real outbox.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fleetroom_agent.runtime.app import Runtime, RuntimeParts, note_server_ts
from fleetroom_agent.runtime.commands import COMMANDS_FILE, ExecutedLog
from fleetroom_agent.runtime.config import parse_config
from fleetroom_agent.runtime.scheduler import SCHEDULE_FILE
from fleetroom_protocol.envelope import seal
from fleetroom_protocol.messages import Command, CommandResult, Reply, Schedule
from nacl.signing import SigningKey

AGENT = "0b4f0f5e-8d0c-4c1e-9a57-2f1b7f6f0001"
SERVER_KEY = SigningKey.generate()
AUTH = "auth-Secret-4711"
PRIV = "priv-Secret-0815"

CONFIG = f"""
[scan]
targets = ["127.0.0.1"]

[policy]
allowlist = ["127.0.0.1/32"]
commands = ["scan-now", "read-device", "set-schedule", "diagnostics"]

[status_page]
enabled = false

[[credentials]]
name = "public"
community = "public"

[[credentials]]
name = "v3"
version = "3"
user = "ops"
auth_proto = "SHA256"
auth_key = "{AUTH}"
priv_proto = "AES256"
priv_key = "{PRIV}"
"""


class StandInSender:
    """Counts wake-ups; delivers nothing (no server in these tests)."""

    def __init__(self) -> None:
        self.wakes = 0

    async def run(self) -> None:
        await asyncio.Event().wait()

    def wake(self) -> None:
        self.wakes += 1

    def status(self) -> dict[str, Any]:
        return {"last_ack_at": None, "transports": {}}

    async def aclose(self) -> None:
        pass


def runtime(data_dir: Path, config: str = CONFIG) -> tuple[Runtime, StandInSender]:
    sender = StandInSender()
    rt = Runtime(parse_config(config), data_dir, AGENT,
                 RuntimeParts(sender_factory=lambda *_: sender))
    return rt, sender


def server_reply_bytes(ts: datetime) -> bytes:
    """A reply envelope as the server seals it (its header carries the server's clock)."""
    return seal(Reply().model_dump_json().encode(), signing_key=SERVER_KEY, sender="server",
                to=AGENT, ctr=7, kind="reply", reply_to=3, now=ts)


async def deliver(rt: Runtime, commands: list[Command], server_ts: datetime | None) -> None:
    """What the sender does with a verified reply: the transport tap notes the envelope
    time, then ``on_reply`` runs in the same task."""
    note_server_ts(server_reply_bytes(server_ts) if server_ts is not None else None)
    await rt.on_reply(Reply(commands=commands))


def results(rt: Runtime) -> list[CommandResult]:
    items = [i for i in rt.outbox.next_batch(1000) if i.stream == "results"]
    return [CommandResult.model_validate_json(i.payload) for i in items]


async def run_commands(rt: Runtime, n: int, timeout: float = 30) -> list[CommandResult]:
    worker = asyncio.create_task(rt.commands.run())
    try:
        async with asyncio.timeout(timeout):
            while len(results(rt)) < n:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing more should come
        return results(rt)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


def cmd(cid: str, kind: str, args: dict[str, Any] | None = None, *,
        issued: datetime | None = None, expires: int = 300) -> Command:
    return Command(id=cid, kind=kind, args=args or {},  # type: ignore[arg-type]
                   issued_at=issued or datetime.now(UTC), expires_in_s=expires)


async def test_read_device_outside_the_allowlist_is_refused_and_nothing_is_sent(tmp_path):
    rt, sender = runtime(tmp_path)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.2", 0))  # a loopback address the allowlist does not contain
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        now = datetime.now(UTC)
        await deliver(rt, [cmd("c1", "read-device", {"target": "10.9.9.9"}),
                           cmd("c2", "read-device", {"target": f"127.0.0.2:{port}"}),
                           cmd("c3", "scan-now", {"targets": ["127.0.0.0/24"]})], now)
        got = {r.command_id: r for r in await run_commands(rt, 3)}
        assert {k: r.outcome for k, r in got.items()} == {
            "c1": "refused", "c2": "refused", "c3": "refused"}
        assert "outside the local allowlist" in got["c1"].detail
        assert "127.0.0.0/24" in got["c3"].detail
        with pytest.raises(BlockingIOError):
            listener.recvfrom(65535)  # not a single datagram reached it
        assert rt.registry.devices == {}
        assert sender.wakes >= 3  # each result is sent at once
    finally:
        listener.close()
        await rt.close()


async def test_command_kind_outside_local_policy_is_refused(tmp_path):
    rt, _ = runtime(tmp_path)
    try:
        await deliver(rt, [cmd("u1", "update-profiles")], datetime.now(UTC))
        (res,) = await run_commands(rt, 1)
        assert res.outcome == "refused"
        assert "[policy] commands" in res.detail
    finally:
        await rt.close()


async def test_each_command_id_runs_at_most_once_even_across_restarts(tmp_path):
    rt, _ = runtime(tmp_path)
    server_now = datetime.now(UTC)
    schedule = Schedule(version=7, status_poll_s=120).model_dump(mode="json")
    try:
        c = cmd("s1", "set-schedule", {"schedule": schedule}, issued=server_now)
        await deliver(rt, [c], server_now)
        await deliver(rt, [c], server_now + timedelta(seconds=5))  # the server repeats it
        got = await run_commands(rt, 1)
        assert [(r.command_id, r.outcome) for r in got] == [("s1", "done")]
        assert rt.schedule.schedule.version == 7
    finally:
        await rt.close()
    assert json.loads((tmp_path / SCHEDULE_FILE).read_text())["status_poll_s"] == 120
    entry = ExecutedLog(tmp_path).entries["s1"]
    assert (entry["state"], entry["outcome"], entry["stored"]) == ("finished", "done", True)
    # restart: the repeat is still recognised, nothing runs, no second result
    rt2, _ = runtime(tmp_path)
    try:
        await deliver(rt2, [c], server_now + timedelta(seconds=60))
        assert rt2.commands.queue.empty()
        assert len(results(rt2)) == 1
    finally:
        await rt2.close()


async def test_expiry_uses_the_server_clock_not_the_local_one(tmp_path):
    """The server's clock says 2001; the agent's says today.  Only the server's counts."""
    rt, _ = runtime(tmp_path)
    issued = datetime(2001, 5, 1, 12, 0, tzinfo=UTC)
    try:
        # Still valid by the server's clock (60 s after issue, 300 s allowed), although
        # by the local clock it is 20+ years old:
        await deliver(rt, [cmd("fresh", "diagnostics", issued=issued, expires=300)],
                      issued + timedelta(seconds=60))
        # Expired by the server's clock (10 min after issue, 5 min allowed), although
        # its issued_at lies far in the local clock's past either way:
        await deliver(rt, [cmd("stale", "diagnostics", issued=issued, expires=300)],
                      issued + timedelta(minutes=10))
        got = {r.command_id: r for r in await run_commands(rt, 2)}
        assert got["fresh"].outcome == "done"
        assert got["stale"].outcome == "expired"
        assert "2001-05-01T12:05:00" in got["stale"].detail
    finally:
        await rt.close()


async def test_a_local_clock_in_the_future_does_not_expire_fresh_commands(tmp_path):
    rt, _ = runtime(tmp_path)
    # The server lives in 1999 by our clock's standards; both ts and issued_at agree.
    server_now = datetime(1999, 12, 31, 23, 59, tzinfo=UTC)
    try:
        await deliver(rt, [cmd("y2k", "set-schedule", {"schedule": Schedule(
            version=2).model_dump(mode="json")}, issued=server_now, expires=60)], server_now)
        (res,) = await run_commands(rt, 1)
        assert res.outcome == "done"
    finally:
        await rt.close()


async def test_without_an_envelope_time_expiry_counts_from_arrival(tmp_path):
    rt, _ = runtime(tmp_path)
    try:
        # issued_at is ancient, but with no server time the command counts as issued
        # on arrival (a monotonic clock, not the wall clock, measures its age).
        await deliver(rt, [cmd("p1", "diagnostics", issued=datetime(2001, 1, 1, tzinfo=UTC),
                               expires=30)], None)
        (res,) = await run_commands(rt, 1)
        assert res.outcome == "done"
    finally:
        await rt.close()


async def test_set_schedule_is_bounded_by_the_protocol(tmp_path):
    rt, _ = runtime(tmp_path)
    try:
        await deliver(rt, [
            cmd("bad", "set-schedule", {"schedule": {"version": 9, "status_poll_s": 1}}),
            cmd("old", "set-schedule", {"schedule": {"version": 0}}),
            cmd("x", "read-device", {"target": "127.0.0.1", "extra": 1}),
        ], datetime.now(UTC))
        got = {r.command_id: r for r in await run_commands(rt, 3)}
        assert got["bad"].outcome == "failed"
        assert "status_poll_s" in got["bad"].detail
        assert got["old"].outcome == "refused"
        assert got["x"].outcome == "failed"
        assert "extra" in got["x"].detail
        assert rt.schedule.schedule.version == 0
    finally:
        await rt.close()


async def test_diagnostics_bundle_has_no_secrets(tmp_path):
    rt, _ = runtime(tmp_path)
    try:
        rt.state.error("test", "something went wrong")
        await deliver(rt, [cmd("d1", "diagnostics")], datetime.now(UTC))
        (res,) = await run_commands(rt, 1)
        assert res.outcome == "done"
        raw = json.dumps(res.data)
        assert AUTH not in raw
        assert PRIV not in raw
        assert res.data["agent_id"] == AGENT
        assert res.data["versions"]["fleetroom-agent"]
        assert res.data["config"]["credentials"][1]["auth_key"] == "<redacted>"
        assert res.data["config"]["policy"]["allowlist"] == ["127.0.0.1/32"]
        assert any(e["message"] == "something went wrong" for e in res.data["errors"])
        assert "queue_items" in res.data["outbox"]
    finally:
        await rt.close()


async def test_a_command_interrupted_by_a_crash_is_reported_not_rerun(tmp_path):
    log = ExecutedLog(tmp_path)
    log.record("k1", kind="scan-now", state="running", deadline="2999-01-01T00:00:00+00:00",
               stored=False)
    rt, _ = runtime(tmp_path)
    try:
        (res,) = await run_commands(rt, 1)  # flush_results at worker start
        assert res.command_id == "k1"
        assert res.outcome == "failed"
        assert "not run again" in res.detail
        await deliver(rt, [cmd("k1", "scan-now")], datetime.now(UTC))
        assert rt.commands.queue.empty()
    finally:
        await rt.close()
    assert json.loads((tmp_path / COMMANDS_FILE).read_text())["entries"]["k1"]["stored"]

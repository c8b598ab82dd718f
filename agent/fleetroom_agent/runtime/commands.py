"""The server's commands: each id at most once, expired by the server's clock, within policy.

Commands arrive in replies to the agent's own requests (or on its own MQTT topic);
the sender has already verified the server's signature and that the envelope is
addressed to this agent.  What is left to decide here:

* **At most once.** Every id is written to ``commands.json`` *before* the command
  runs.  A repeat (the server re-sends until it sees the result; a reply seen
  twice over two transports) is ignored; a command interrupted by a crash is
  reported as failed at the next start, never run a second time.
* **Expiry by the server's clock.** ``issued_at + expires_in_s`` is compared with
  the server's time: the envelope's ``ts`` plus the monotonic time that passed
  since it arrived.  The agent's own wall clock — possibly years off — is never
  consulted.  Without an envelope time (a transport that cannot give one) the
  command counts as issued when it arrived, which is just as clock-free.
* **Local policy first.** A kind not in ``[policy] commands`` is ``refused``; the
  handlers check every address against the allowlist the server cannot widen.
* **Off the sender's path.** ``receive`` only records and queues; one worker runs
  the commands in order, so a long scan never stalls the sender that delivered it.

Results go to the ``results`` stream (HIGH priority) as ``CommandResult`` and the
sender is woken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from fleetroom_protocol.messages import STREAM_RESULTS, Command, CommandResult
from pydantic import ValidationError

from ..outbox import NewItem, Priority
from .jsonfile import read_json, write_json

log = logging.getLogger(__name__)

COMMANDS_FILE: Final = "commands.json"
KEEP_IDS: Final = 5000
"""Ids remembered at most (the newest); older ones expired long ago anyway."""
KEEP_AFTER_EXPIRY: Final = timedelta(days=2)
"""An id is kept this long past its expiry (server clock), then forgotten: a
repeat after that would be expired, and expired commands are never run."""
MAX_QUEUED: Final = 100
COMMAND_TIMEOUT_S: Final = 3600.0
"""A command that runs longer is abandoned and reported failed."""

Outcome = Literal["done", "failed", "refused", "expired"]


@dataclass(frozen=True)
class HandlerResult:
    """What a handler says happened."""

    outcome: Outcome
    detail: str = ""
    data: dict[str, Any] | None = None


class Refused(Exception):
    """Raised by a handler when local policy forbids what the command asks."""


class Handlers(Protocol):
    """One coroutine per command kind (implemented by the runtime)."""

    async def scan_now(self, args: dict[str, Any]) -> HandlerResult:
        """``scan-now``: optional ``targets`` (each within the allowlist)."""
        ...

    async def read_device(self, args: dict[str, Any]) -> HandlerResult:
        """``read-device``: ``target`` (within the allowlist)."""
        ...

    async def update_profiles(self, args: dict[str, Any]) -> HandlerResult:
        """``update-profiles``: check for and apply a newer signed bundle."""
        ...

    async def set_schedule(self, args: dict[str, Any]) -> HandlerResult:
        """``set-schedule``: the new :class:`Schedule` (protocol limits apply)."""
        ...

    async def diagnostics(self, args: dict[str, Any]) -> HandlerResult:
        """``diagnostics``: versions, redacted config, outbox stats, last errors."""
        ...


def aware(ts: datetime) -> datetime:
    """Protocol times without a zone are UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _parse_ts(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return aware(datetime.fromisoformat(text))
    except ValueError:
        return None


class ExecutedLog:
    """``commands.json``: every command id seen, its state and its result."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / COMMANDS_FILE
        raw = read_json(self.path)
        entries = raw.get("entries") if isinstance(raw, dict) else None
        self.entries: dict[str, dict[str, Any]] = (
            {k: v for k, v in entries.items() if isinstance(v, dict)}
            if isinstance(entries, dict) else {})

    def seen(self, command_id: str) -> bool:
        """True when ``command_id`` was received before (whatever became of it)."""
        return command_id in self.entries

    def record(self, command_id: str, **fields: Any) -> None:
        """Create or update an entry and persist at once (before acting on it)."""
        entry = self.entries.setdefault(command_id, {"seq": len(self.entries) + 1})
        entry.update(fields)
        self.save()

    def prune(self, server_now: datetime) -> None:
        """Forget ids long past their expiry (by the server's clock) and the oldest
        beyond :data:`KEEP_IDS`; entries whose result is not stored yet are kept."""
        for cid, entry in list(self.entries.items()):
            deadline = _parse_ts(entry.get("deadline"))
            if (deadline is not None and entry.get("stored")
                    and deadline + KEEP_AFTER_EXPIRY < aware(server_now)):
                del self.entries[cid]
        if len(self.entries) > KEEP_IDS:
            ordered = sorted(self.entries.items(), key=lambda kv: int(kv[1].get("seq", 0)))
            for cid, _ in ordered[: len(self.entries) - KEEP_IDS]:
                del self.entries[cid]

    def save(self) -> None:
        """Persist (atomic; see :mod:`.jsonfile`)."""
        write_json(self.path, {"entries": self.entries})


@dataclass(frozen=True)
class Received:
    """A command and when it arrived, in server time and local monotonic time."""

    command: Command
    server_ts: datetime | None
    received_mono: float

    def server_now(self, mono_now: float) -> datetime | None:
        """The server's clock now, as well as the agent can tell without its own."""
        if self.server_ts is None:
            return None
        return aware(self.server_ts) + timedelta(seconds=max(0.0, mono_now - self.received_mono))

    def deadline(self) -> datetime:
        """When the command expires, on the server's clock."""
        return aware(self.command.issued_at) + timedelta(seconds=self.command.expires_in_s)

    def expired(self, mono_now: float) -> bool:
        """True when the command is too old to run."""
        now = self.server_now(mono_now)
        if now is None:  # no server time: the command counts as issued on arrival
            return mono_now - self.received_mono > self.command.expires_in_s
        return now > self.deadline()


PutResult = Callable[[list[NewItem]], Awaitable[bool]]


class CommandRunner:
    """Receives, records, queues and executes commands; see the module doc."""

    def __init__(self, data_dir: Path, handlers: Handlers, *, allowed_kinds: Sequence[str],
                 put: PutResult, wake: Callable[[], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.log = ExecutedLog(data_dir)
        self.handlers = handlers
        self.allowed = frozenset(allowed_kinds)
        self.put = put
        self.wake = wake
        self.monotonic = monotonic
        self.queue: asyncio.Queue[Received] = asyncio.Queue(MAX_QUEUED)
        self._interrupted()

    def _interrupted(self) -> None:
        """Commands that were queued or running when the agent stopped: report them
        failed (they are never run again — at most once)."""
        changed = False
        for cid, entry in self.log.entries.items():
            if entry.get("state") in ("queued", "running"):
                changed = True
                result = CommandResult(command_id=cid, outcome="failed",
                                       detail="the agent stopped before the command finished; "
                                              "it was not run again")
                self.log.entries[cid].update(state="finished", outcome="failed",
                                             result=result.model_dump(mode="json", by_alias=True),
                                             stored=False)
        if changed:
            self.log.save()

    async def flush_results(self) -> None:
        """Put every result not yet in the outbox (e.g. after a full disk) into it."""
        pending = [(cid, e) for cid, e in self.log.entries.items()
                   if e.get("state") == "finished" and not e.get("stored") and e.get("result")]
        if not pending:
            return
        items = [NewItem(STREAM_RESULTS, _result_bytes(e["result"]), Priority.HIGH)
                 for _, e in pending]
        if await self.put(items):
            for cid, _ in pending:
                self.log.entries[cid]["stored"] = True
            self.log.save()
            self.wake()

    async def receive(self, commands: Sequence[Command], server_ts: datetime | None) -> None:
        """Record new commands and queue them; repeats are ignored.  Fast: this runs
        in the sender's reply path."""
        mono = self.monotonic()
        for cmd in commands:
            if self.log.seen(cmd.id):
                log.debug("command %s already received; ignoring the repeat", cmd.id)
                continue
            got = Received(cmd, server_ts, mono)
            self.log.record(cmd.id, kind=cmd.kind, state="queued",
                            deadline=got.deadline().isoformat(), stored=False,
                            server_ts=server_ts.isoformat() if server_ts else None)
            try:
                self.queue.put_nowait(got)
            except asyncio.QueueFull:
                await self._finish(got, HandlerResult("failed", "too many commands queued"))
        if server_ts is not None:
            self.log.prune(server_ts)

    async def run(self) -> None:
        """Forever: execute queued commands one after the other."""
        await self.flush_results()
        while True:
            got = await self.queue.get()
            try:
                await self._execute(got)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one command stop the worker
                log.exception("command %s crashed", got.command.id)
                await self._finish(got, HandlerResult("failed", f"{type(exc).__name__}: {exc}"))

    async def _execute(self, got: Received) -> None:
        cmd = got.command
        if got.expired(self.monotonic()):
            await self._finish(got, HandlerResult(
                "expired", f"expired at {got.deadline().isoformat()} (server time)"))
            return
        if cmd.kind not in self.allowed:
            await self._finish(got, HandlerResult(
                "refused", f"{cmd.kind} is not allowed by the local policy ([policy] commands)"))
            return
        self.log.record(cmd.id, state="running")
        handler = {
            "scan-now": self.handlers.scan_now,
            "read-device": self.handlers.read_device,
            "update-profiles": self.handlers.update_profiles,
            "set-schedule": self.handlers.set_schedule,
            "diagnostics": self.handlers.diagnostics,
        }[cmd.kind]
        log.info("running command %s (%s)", cmd.id, cmd.kind)
        try:
            result = await asyncio.wait_for(handler(dict(cmd.args)), COMMAND_TIMEOUT_S)
        except Refused as exc:
            result = HandlerResult("refused", str(exc))
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "args"
                               for e in exc.errors(include_input=False))
            result = HandlerResult("failed", f"invalid arguments: {fields}")
        except (ValueError, TypeError, KeyError) as exc:
            result = HandlerResult("failed", f"invalid arguments: {exc}")
        except TimeoutError:
            result = HandlerResult("failed", f"did not finish within {COMMAND_TIMEOUT_S:.0f} s")
        await self._finish(got, result)

    async def _finish(self, got: Received, result: HandlerResult) -> None:
        cmd = got.command
        res = CommandResult(command_id=cmd.id, outcome=result.outcome,
                            detail=result.detail[:2000], data=result.data or {})
        dumped = res.model_dump(mode="json", by_alias=True)
        self.log.record(cmd.id, state="finished", outcome=result.outcome, result=dumped,
                        stored=False)
        log.info("command %s (%s): %s %s", cmd.id, cmd.kind, result.outcome, result.detail)
        if await self.put([NewItem(STREAM_RESULTS, _result_bytes(dumped), Priority.HIGH)]):
            self.log.record(cmd.id, stored=True)
            self.wake()


def _result_bytes(result: dict[str, Any]) -> bytes:
    return CommandResult.model_validate(result).model_dump_json(by_alias=True).encode()

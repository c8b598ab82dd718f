"""The sender: moves outbox items to the server until each one is acknowledged.

One loop, forever:

1. take the next batch from the outbox (critical alerts and gap records first —
   the outbox orders by priority);
2. seal it with the agent's key and a *fresh* counter — every attempt, on every
   transport, is a new envelope, because the server counts a replayed counter as
   a policy violation;
3. try the transports in the configured order; a transport that fails is put on
   its own back-off, and the next one is tried at once (failover);
4. verify the reply — the server's signature, addressed to us, a ``reply`` to this
   very counter — and only then delete exactly the acknowledged items.  An
   unverified reply never deletes anything: it counts as a failed attempt;
5. on failure wait with exponential back-off and full jitter (capped), never less
   than the server's ``Retry-After``, and never give up: items stay until acked.

With an empty queue it waits for :meth:`Sender.wake` (e.g. a critical alert was
just stored) or for the next poll, which fetches commands at most every
``schedule.command_poll_s`` (commands also ride on every batch reply).  A
``suspended`` or ``revoked`` reply stops sending: the agent must be re-enrolled,
and :meth:`Sender.status` says so.

Threading: outbox calls are synchronous SQLite and run in ``asyncio.to_thread``;
``wake()`` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from fleetroom_protocol.envelope import (
    MAX_ENVELOPE_BYTES,
    SERVER,
    EnvelopeError,
    body_model,
    seal,
    split,
    verify,
)
from fleetroom_protocol.messages import (
    AgentState,
    PollBody,
    Reply,
    Schedule,
    encode_batch_body,
)

from fleetroom_agent.backoff import Backoff
from fleetroom_agent.identity import AgentIdentity, CounterStore, IdentityError
from fleetroom_agent.outbox import Item, Outbox
from fleetroom_agent.transports.base import Transport, TransportError

log = logging.getLogger(__name__)

MAX_BATCH_ITEMS: Final = 5000
"""The protocol's cap on items per batch (``BatchBody.items``)."""
MIN_POLL_S: Final = 30.0
"""Never poll more often than this, whatever a reply suggests."""

OnReply = Callable[[Reply], Awaitable[None]]


class ReplyRejected(Exception):
    """A reply (or push) failed verification; nothing in it was acted upon."""


@dataclass(frozen=True, slots=True)
class SenderStatus:
    """What ``fleetroom-agent status`` shows about delivery."""

    running: bool
    suspended: Literal["suspended", "revoked"] | None
    """Set when the server stopped accepting this agent: re-enroll it."""
    server_message: str
    last_ack_at: datetime | None
    last_contact_at: datetime | None
    """Last verified reply from the server (with or without acks)."""
    last_error: str | None
    last_error_at: datetime | None
    last_transport: str | None
    consecutive_failures: int
    next_attempt_at: datetime | None
    """When the next attempt is due (back-off or Retry-After), if one is waiting."""
    next_poll_at: datetime | None
    """When the next poll is due if the queue stays empty."""
    items_acked: int
    transports: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per transport: ``failures``, ``last_error``, ``ready_at``."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (datetimes as ISO 8601)."""
        def conv(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: conv(v) for k, v in value.items()}
            return value
        return {k: conv(v) for k, v in asdict(self).items()}


@dataclass(slots=True)
class _Route:
    """One transport and its own back-off state."""

    transport: Transport
    failures: int = 0
    ready_at: float = 0.0
    """Monotonic time before which back-off says wait (cleared by ``wake()``)."""
    not_before: float = 0.0
    """Monotonic time before which the server said wait (``Retry-After``; never cleared)."""
    last_error: str | None = None

    def due(self) -> float:
        return max(self.ready_at, self.not_before)


class Sender:
    """Delivers the outbox through ``transports`` (in failover order); see module doc.

    ``state`` is called for every envelope and must be cheap (it runs in the event
    loop); the sender fills in ``transport``, and ``last_ack_at``/``last_error``
    when the callable leaves them empty.  ``on_reply`` gets every verified reply
    (commands, schedule) *after* its acknowledgements were applied; it must return
    quickly — queue commands, do not run them there — because delivery waits for
    it.  An exception there is logged and does not stop delivery.
    """

    def __init__(self, identity: AgentIdentity, outbox: Outbox, transports: Sequence[Transport],
                 state: Callable[[], AgentState], on_reply: OnReply, *,
                 counter: CounterStore | None = None, max_items: int = 500,
                 max_bytes: int = 1_000_000, backoff: Backoff | None = None,
                 one_way_resend_s: float = 900.0,
                 max_reply_bytes: int = MAX_ENVELOPE_BYTES) -> None:
        if not transports:
            msg = "at least one transport is needed"
            raise ValueError(msg)
        if counter is None:
            if identity.data_dir is None:
                msg = "pass counter= or an identity loaded from a data directory"
                raise ValueError(msg)
            counter = CounterStore(identity.data_dir)
        self.identity = identity
        self.outbox = outbox
        self.counter = counter
        self.state = state
        self.on_reply = on_reply
        self.schedule: Schedule = identity.schedule
        self.max_items = max(1, min(max_items, MAX_BATCH_ITEMS))
        self.max_bytes = max(1, max_bytes)
        self.backoff = backoff or Backoff()
        self.one_way_resend_s = one_way_resend_s
        self.max_reply_bytes = max_reply_bytes
        self._routes = [_Route(t) for t in transports]
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._round_lock = asyncio.Lock()
        self._next_poll_at = 0.0  # poll on start: fetch commands and the schedule
        self._hold_until = 0.0  # after a one-way hand-over
        self._shrunk: tuple[int, int] | None = None  # (items, bytes) after HTTP 413
        self._running = False
        self._suspended: Literal["suspended", "revoked"] | None = None
        self._server_message = ""
        self._last_ack_at: datetime | None = None
        self._last_contact_at: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._last_transport: str | None = None
        self._failures = 0
        self._next_attempt: float | None = None
        self._items_acked = 0
        self._store_id: str | None = None

    # ------------------------------------------------------------------ public

    def wake(self) -> None:
        """Send now (new critical item, or a command asked for it).

        Cuts the idle wait and the back-off short, but never a server's
        ``Retry-After``.  Safe to call from any thread.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            self._event.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._event.set()
        else:
            loop.call_soon_threadsafe(self._event.set)

    def status(self) -> SenderStatus:
        """A snapshot of delivery health (cheap; no I/O)."""
        mono, wall = time.monotonic(), datetime.now(UTC)

        def at(t: float | None) -> datetime | None:
            return None if t is None else wall + timedelta(seconds=max(0.0, t - mono))

        routes = {r.transport.name: {"failures": r.failures, "last_error": r.last_error,
                                     "ready_at": at(r.due()) if r.due() > mono else None}
                  for r in self._routes}
        return SenderStatus(
            running=self._running, suspended=self._suspended,
            server_message=self._server_message, last_ack_at=self._last_ack_at,
            last_contact_at=self._last_contact_at, last_error=self._last_error,
            last_error_at=self._last_error_at, last_transport=self._last_transport,
            consecutive_failures=self._failures,
            next_attempt_at=at(self._next_attempt) if self._next_attempt is not None else None,
            next_poll_at=at(self._next_poll_at) if self._next_poll_at else None,
            items_acked=self._items_acked, transports=routes)

    async def run(self) -> None:
        """Deliver forever; returns only when the server suspends or revokes the agent."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        try:
            while self._suspended is None:
                try:
                    await self._step()
                except Exception as exc:  # e.g. the outbox's disk: never stop for good
                    self._failures += 1
                    self._note_error(f"delivery loop: {exc}")
                    log.exception("delivery loop failed; retrying after back-off")
                    await self._sleep(self.backoff.delay(self._failures))
        finally:
            self._running = False

    async def poll(self) -> Reply | None:
        """One poll now (commands, schedule), through the failover order.

        A transport still in back-off or told to wait (``Retry-After``) is
        skipped; returns the verified reply, or ``None``.
        """
        if self._suspended is not None:
            return None
        return await self._round([], kind="poll")

    async def accept_push(self, data: bytes) -> Reply:
        """Verify and apply an envelope the server pushed (MQTT ``down`` topic).

        Same rules as for replies — server key, addressed to us — except that a
        push answers no particular request.  Raises :class:`ReplyRejected`.
        """
        reply = self._verify(data, expect_reply_to=None)
        await self._apply(reply, [])
        await self._hand_over([reply])
        return reply

    async def aclose(self) -> None:
        """Close every transport."""
        for route in self._routes:
            with contextlib.suppress(Exception):
                await route.transport.aclose()

    # ------------------------------------------------------------------ loop

    async def _step(self) -> None:
        limit, max_bytes = self._shrunk or (self.max_items, self.max_bytes)
        items = await asyncio.to_thread(self.outbox.next_batch, limit, max_bytes)
        now = time.monotonic()
        if not items and now < self._next_poll_at:
            self._next_attempt = None
            await self._sleep(self._next_poll_at - now)
            return
        if now < self._hold_until:
            self._next_attempt = self._hold_until
            if await self._sleep(self._hold_until - now):
                self._hold_until = 0.0
            return
        due = min(r.due() for r in self._routes)
        if due > now:
            self._next_attempt = due
            await self._sleep(due - now)
            return
        self._next_attempt = None
        await self._round(items, kind="batch" if items else "poll")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken by :meth:`wake`.

        A wake cuts every transport's back-off short (a critical item should not
        sit out a five-minute back-off), but never a server's ``Retry-After``.
        """
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return False
        self._event.clear()
        for route in self._routes:
            route.ready_at = 0.0
        return True

    def _envelope_state(self, transport: str) -> AgentState:
        try:
            state = self.state()
        except Exception:
            log.exception("the agent-state callback failed; sending an empty state")
            state = AgentState()
        update: dict[str, Any] = {"transport": transport,
                                  "schedule_version": state.schedule_version
                                  or self.schedule.version}
        if state.last_ack_at is None:
            update["last_ack_at"] = self._last_ack_at
        if state.last_error is None and self._last_error:
            update["last_error"] = self._last_error[:500]
        return state.model_copy(update=update)

    async def _seal(self, kind: Literal["batch", "poll"], items: list[Item],
                    transport: str) -> tuple[bytes, int]:
        state = self._envelope_state(transport)  # in the loop: the callback is not threaded
        store = await self._store() if kind == "batch" else ""

        def build() -> tuple[bytes, int]:
            # JSON splicing and gzip of up to max_bytes: keep it off the event loop.
            if kind == "batch":
                body = encode_batch_body(((store, i.stream, i.seq, int(i.priority),
                                           i.created_at, i.payload) for i in items), state)
            else:
                body = PollBody(state=state).model_dump_json().encode()
            ctr = self.counter.next()
            return seal(body, signing_key=self.identity.signing_key,
                        sender=self.identity.agent_id, to=SERVER, ctr=ctr, kind=kind), ctr

        return await asyncio.to_thread(build)

    async def _store(self) -> str:
        if self._store_id is None:
            self._store_id = await asyncio.to_thread(lambda: self.outbox.store_id)
        return self._store_id

    async def _round(self, items: list[Item], *,
                     kind: Literal["batch", "poll"]) -> Reply | None:
        """One delivery attempt through the routes in order; the verified reply or None.

        ``on_reply`` runs after the round lock is released, so a handler may call
        :meth:`poll` or :meth:`wake` without deadlocking.
        """
        verified: list[Reply] = []
        try:
            return await self._locked_round(items, kind, verified)
        finally:
            await self._hand_over(verified)

    async def _hand_over(self, replies: list[Reply]) -> None:
        for reply in replies:
            try:
                await self.on_reply(reply)
            except Exception:
                log.exception("handling the server's reply failed (acks were applied)")

    async def _locked_round(self, items: list[Item], kind: Literal["batch", "poll"],
                            verified: list[Reply]) -> Reply | None:
        """The round under the lock; every verified reply is appended to ``verified``."""
        async with self._round_lock:
            now = time.monotonic()
            routes = [r for r in self._routes if r.due() <= now]
            if not routes:
                return None
            for route in routes:
                name = route.transport.name
                try:
                    envelope, ctr = await self._seal(kind, items, name)
                except (OSError, IdentityError) as exc:
                    # No counter reservation (disk full, read-only): nothing can be sent
                    # safely on any transport; back off and try again later.
                    self._fail(route, f"cannot reserve a message counter: {exc}", None)
                    break
                try:
                    raw = await route.transport.exchange(envelope)
                except TransportError as exc:
                    if exc.reply is not None:
                        await self._error_reply(exc.reply, ctr, items, verified)
                        if self._suspended is not None:
                            return None
                    if exc.status == 413 and len(items) > 1:
                        size = sum(len(i.payload) for i in items)
                        self._shrunk = (max(1, len(items) // 2), max(1, size // 2))
                    self._fail(route, f"{name}: {exc.message}", exc.retry_after)
                    if exc.retry_after is not None:
                        break  # the server asked everyone to slow down: no failover storm
                    continue
                except Exception as exc:  # a transport bug must not kill delivery
                    log.exception("transport %s failed unexpectedly", name)
                    self._fail(route, f"{name}: internal error: {exc!r}", None)
                    continue
                if raw is None:  # one-way (e-mail): handed over, acks come later
                    self._succeed(route)
                    self._hold_until = time.monotonic() + self.one_way_resend_s
                    return None
                try:
                    reply = self._verify(raw, expect_reply_to=ctr)
                except ReplyRejected as exc:
                    self._fail(route, f"{name}: reply rejected: {exc}", None)
                    continue
                acked = await self._apply(reply, items)
                verified.append(reply)
                if items and acked == 0 and self._suspended is None:
                    self._fail(route, f"{name}: the server acknowledged none of "
                               f"{len(items)} item(s)", None)
                    continue
                self._succeed(route)
                if acked == len(items):
                    self._shrunk = None
                return reply
            self._failures += 1
            return None

    def _succeed(self, route: _Route) -> None:
        route.failures = 0
        route.ready_at = route.not_before = 0.0
        route.last_error = None
        self._failures = 0
        self._last_transport = route.transport.name

    def _fail(self, route: _Route, message: str, retry_after: float | None) -> None:
        route.failures += 1
        now = time.monotonic()
        route.ready_at = now + self.backoff.delay(route.failures)
        if retry_after is not None:
            # The server decides per agent, whatever the path (every transport ends in
            # the same receive function), so the wait applies to all transports.
            for other in self._routes:
                other.not_before = max(other.not_before, now + retry_after)
        route.last_error = message
        self._note_error(message)
        log.warning("delivery attempt failed: %s", message)

    def _note_error(self, message: str) -> None:
        self._last_error = message
        self._last_error_at = datetime.now(UTC)

    # -------------------------------------------------------------- replies

    def _verify(self, raw: bytes, *, expect_reply_to: int | None) -> Reply:
        """The reply's body, only if it is the server's signed answer meant for us."""
        try:
            sealed = split(raw, max_bytes=self.max_reply_bytes)
            verify(sealed, self.identity.server_verify_key)
        except EnvelopeError as exc:
            raise ReplyRejected(f"{exc} ({exc.code})") from None
        header = sealed.header
        if header.sender != SERVER:
            raise ReplyRejected(f"sent by {header.sender!r}, not the server")
        if header.to != self.identity.agent_id:
            raise ReplyRejected(f"addressed to agent {header.to!r}, not to this agent")
        if expect_reply_to is not None:
            if header.kind != "reply":
                raise ReplyRejected(f"a {header.kind!r} envelope where a reply was expected")
            if header.reply_to != expect_reply_to:
                raise ReplyRejected(f"answers message {header.reply_to}, "
                                    f"not {expect_reply_to}")
        elif header.kind not in {"reply", "command"}:
            raise ReplyRejected(f"a {header.kind!r} envelope cannot be pushed to an agent")
        try:
            return body_model(sealed, Reply)
        except EnvelopeError as exc:
            raise ReplyRejected(f"{exc} ({exc.code})") from None

    async def _error_reply(self, raw: bytes, ctr: int, items: list[Item],
                           verified: list[Reply]) -> None:
        """A signed reply that came with an error status: act on it only if it verifies."""
        try:
            reply = self._verify(raw, expect_reply_to=ctr)
        except ReplyRejected as exc:
            log.warning("ignoring an unverifiable error reply: %s", exc)
            return
        await self._apply(reply, items)
        verified.append(reply)

    async def _apply(self, reply: Reply, items: list[Item]) -> int:
        """Acknowledge, note schedule and suspension (``on_reply`` comes later).

        Returns how many of ``items`` the reply acknowledged.
        """
        self._last_contact_at = datetime.now(UTC)
        acked = 0
        if reply.acked:
            store = await self._store()
            # Ranges acknowledged under another outbox's store id are not ours to delete.
            mine = [(r.stream, r.first, r.last) for r in reply.acked if r.store == store]
            if mine:
                self._items_acked += await asyncio.to_thread(self.outbox.ack_ranges, mine)
                self._last_ack_at = self._last_contact_at
                acked = sum(1 for i in items if any(
                    stream == i.stream and first <= i.seq <= last for stream, first, last in mine))
        if reply.schedule is not None:
            self.schedule = reply.schedule
        interval = float(reply.poll_after_s or self.schedule.command_poll_s)
        self._next_poll_at = time.monotonic() + max(MIN_POLL_S, interval)
        if reply.status != "ok":
            self._suspended = reply.status
            self._server_message = reply.message
            self._last_error = (f"the server {reply.status} this agent"
                                + (f": {reply.message}" if reply.message else "")
                                + "; re-enroll it (fleetroom-agent enroll --force)")
            self._last_error_at = self._last_contact_at
            log.error("%s", self._last_error)
        elif reply.message:
            self._server_message = reply.message
        return acked


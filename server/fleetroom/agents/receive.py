"""The one entry point for agent messages, whatever carried them (HTTPS, MQTT, e-mail).

:func:`receive_envelope` takes the envelope bytes and returns an :class:`Outcome`:
an HTTP-like status, the sealed reply for the agent (or nothing when the sender
could not be authenticated), and a Retry-After.  The HTTPS view, the MQTT bridge
and the mail intake only move bytes; every decision is made here, in this order:

1. **The source's failure budget** — an address (or MQTT client, or mail sender)
   that produced too many unauthenticated failures gets 429 before anything is
   parsed.  Those failures never count against an agent.
2. **Size cap, framing and header** (:func:`fleetroom_protocol.envelope.split`).
3. **The agent** named by ``header.sender`` (unknown: 401, empty body) and **its
   signature** over the raw bytes (bad: 401, empty body, counts for the source).
4. **Policy**, only for validly signed requests: a revoked or suspended agent, a
   message counter seen before (or too far behind), a message addressed to someone
   else, or sent on another agent's channel.  Each is one *policy violation*;
   the fifth suspends the agent until an administrator re-enrolls it
   (:func:`~fleetroom.agents.services.do_record_violation`).  A suspended agent
   gets a signed reply saying so.  An envelope *byte-identical* to one already
   accepted is not a replay attack but a transport delivering twice (MQTT QoS 1,
   a mail relay retrying): it is answered with its acknowledgements again and
   changes nothing.
5. **Rate limits** per agent and per tenant (429) and **backlog protection**
   (503 while normalisation is too far behind); both with Retry-After, so the
   agent keeps its data and comes back later.  The limits are only *checked*
   here; the request is *counted* in the transaction of step 7
   (:mod:`~fleetroom.agents.ratelimit`), or in a small one of its own when it is
   answered without being stored.
6. **The body**, inflated with a hard cap (a gzip bomb stops there: 413).
7. **One transaction**: the replay window and the agent's state (last seen,
   reported state, clock skew), the raw batch, the item keys (conflicts ignored —
   a repeat is harmless), commands taken for delivery, and last the request
   counted against the limits (over one: all rolled back, 429).
8. **After commit**, the reply: acknowledgement ranges for every item of the
   batch (new and repeated, since both are committed), item problems, pending
   commands, the schedule when the agent's copy is behind, when to poll next.
   Normalisation runs afterwards as a background task.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext
from fleetroom_protocol.envelope import (
    SERVER,
    EnvelopeError,
    Header,
    Sealed,
    body_model,
    seal,
    split,
    verify,
)
from fleetroom_protocol.messages import (
    STREAMS,
    AckRange,
    BatchBody,
    Command,
    ItemProblem,
    PollBody,
    Reply,
    WireItem,
)
from fleetroom_protocol.replay import ReplayState

from . import ratelimit
from .conf import config
from .keys import server_keys
from .models import (
    COMMAND_OPEN,
    Agent,
    AgentCommand,
    AgentStatus,
    CommandStatus,
    ItemState,
    ReceivedBatch,
    ReceivedItem,
    Violation,
)
from .services import do_record_violation, silent_after

log = logging.getLogger(__name__)

RECENT_ENVELOPES: Final = 32
MAX_COMMANDS_PER_REPLY: Final = 20
BACKLOG_RETRY_S: Final = 30.0
INSERT_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer.  ``body`` is a sealed reply for the agent, or ``b""`` when the
    sender could not be authenticated; ``reason`` is a short code for logs and tests."""

    status: int
    body: bytes = b""
    retry_after: float | None = None
    agent_id: str | None = None
    reason: str = "ok"


# --- replies -------------------------------------------------------------------------

class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = 0

    def next(self) -> int:
        with self.lock:
            self.last = max(self.last + 1, time.time_ns() // 1000)
            return self.last


_counter = _Counter()


def server_ctr() -> int:
    """An increasing number for the ``ctr`` of server envelopes (microseconds, never
    repeating within a process).  Agents do not window-check it; ``reply_to`` and
    ``to`` tie a reply to its request."""
    return _counter.next()


def seal_for(agent_id: str, reply: Reply, *, reply_to: int | None,
             kind: Literal["reply", "command"] = "reply") -> bytes:
    """``reply`` signed by the server, addressed to ``agent_id``."""
    return seal(reply, signing_key=server_keys().signing_key, sender=SERVER, to=agent_id,
                ctr=server_ctr(), kind=kind, reply_to=reply_to)


def signed_outcome(agent: Agent, header: Header, status: int, reason: str, *,
                   message: str = "", retry_after: float | None = None,
                   reply: Reply | None = None) -> Outcome:
    """A reply to ``header``'s request, sealed for ``agent`` (its status unless ``reply``)."""
    if reply is None:
        reply = Reply(status=_reply_status(agent.status), message=message)
    body = seal_for(agent.public_id, reply, reply_to=header.ctr)
    return Outcome(status, body, retry_after, agent.public_id, reason)


def _reply_status(status: str) -> Literal["ok", "suspended", "revoked"]:
    if status == AgentStatus.SUSPENDED:
        return "suspended"
    if status == AgentStatus.REVOKED:
        return "revoked"
    return "ok"


def ack_ranges(items: Iterable[WireItem]) -> list[AckRange]:
    """Consecutive runs of sequence numbers per (store, stream), in order."""
    seqs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for item in items:
        seqs[item.store, item.stream].add(item.seq)
    out: list[AckRange] = []
    for (store, stream), values in sorted(seqs.items()):
        ordered = sorted(values)
        first = prev = ordered[0]
        for seq in ordered[1:]:
            if seq != prev + 1:
                out.append(AckRange(store=store, stream=stream, first=first, last=prev))
                first = seq
            prev = seq
        out.append(AckRange(store=store, stream=stream, first=first, last=prev))
    return out


def _problems(items: Iterable[WireItem]) -> list[ItemProblem]:
    return [ItemProblem(stream=i.stream, seq=i.seq, error="unknown stream")
            for i in items if i.stream not in STREAMS]


# --- commands ------------------------------------------------------------------------


def take_commands(agent: Agent, now: datetime) -> list[Command]:
    """Commands to hand to ``agent`` now, marked delivered (call inside a transaction).

    Not yet delivered ones, and delivered ones without a result after
    ``command_redeliver_seconds`` (the reply carrying them may have been lost;
    the agent runs each id once).  Expired ones are closed instead.
    """
    AgentCommand.objects.filter(agent=agent, status__in=COMMAND_OPEN,
                                expires_at__lte=now).update(status=CommandStatus.EXPIRED)
    redeliver = now - timedelta(seconds=config().command_redeliver_seconds)
    due = list(AgentCommand.objects.filter(agent=agent, expires_at__gt=now)
               .filter(Q(status=CommandStatus.PENDING)
                       | Q(status=CommandStatus.DELIVERED, last_delivered_at__lt=redeliver))
               .order_by("issued_at", "pk")[:MAX_COMMANDS_PER_REPLY])
    if not due:
        return []
    AgentCommand.objects.filter(pk__in=[c.pk for c in due]).update(
        status=CommandStatus.DELIVERED, delivered_at=Coalesce(F("delivered_at"), now),
        last_delivered_at=now, deliveries=F("deliveries") + 1)
    return [Command.model_validate({
        "id": c.command_id, "kind": c.kind, "args": c.args, "issued_at": c.issued_at,
        "expires_in_s": max(1, int((c.expires_at - now).total_seconds()))}) for c in due]


def push_commands(agent: Agent) -> bytes | None:
    """A sealed ``command`` envelope with the agent's due commands (marked delivered),
    or ``None`` when there are none — for the MQTT bridge's push."""
    with transaction.atomic():
        a = Agent.objects.select_for_update().get(pk=agent.pk)
        if a.status != AgentStatus.ACTIVE:
            return None
        commands = take_commands(a, timezone.now())
    if not commands:
        return None
    return seal_for(a.public_id, Reply(commands=commands), reply_to=None, kind="command")


# --- the checks ----------------------------------------------------------------------


def _strike(source: str) -> None:
    ratelimit.hit("source", source, config().source_failure_rate)


def _policy(agent: Agent, header: Header, expected_sender: str | None) -> Violation | None:
    if agent.status == AgentStatus.REVOKED:
        return Violation.REVOKED
    if agent.status == AgentStatus.SUSPENDED:
        return Violation.SUSPENDED
    if header.to != SERVER:
        return Violation.WRONG_RECIPIENT
    if expected_sender is not None and expected_sender != header.sender:
        return Violation.WRONG_CHANNEL
    return None


def _digest_tag(ctr: int, digest: str) -> str:
    return f"{ctr}:{digest[:32]}"


def _is_duplicate(agent: Agent, ctr: int, digest: str) -> bool:
    """True when exactly these bytes were accepted before (a transport's repeat)."""
    if _digest_tag(ctr, digest) in agent.recent_envelopes.split(","):
        return True
    return ReceivedBatch.objects.filter(agent=agent, ctr=ctr, envelope_sha256=digest).exists()


def violation_outcome(agent: Agent, header: Header, violation: Violation, transport: str,
                      source: str) -> Outcome:
    """Record ``violation`` for ``agent`` and answer it with a signed 403."""
    updated = do_record_violation(agent, violation, ctr=header.ctr, transport=transport,
                                  source=source)
    return signed_outcome(updated, header, 403, f"violation:{violation.value}",
                          message=str(Violation(violation).label))


def replay_violation(verdict: str) -> Violation:
    return Violation.TOO_OLD if verdict == "too-old" else Violation.REPLAYED


def _backlogged() -> bool:
    limit = config().max_backlog_batches
    pending = ReceivedBatch.objects.filter(processed_at__isnull=True).order_by()[:limit]
    return pending.count() >= limit


def _skew(ts: datetime, now: datetime) -> float:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return round((ts - now).total_seconds(), 3)


def _enqueue(batch_id: int) -> None:
    try:
        from . import tasks

        tasks.process_batch(batch_id)
    except Exception:  # the periodic sweep picks the batch up
        log.exception("could not queue normalisation of batch %s", batch_id)


# --- the entry point -----------------------------------------------------------------


def authenticate(data: bytes, *, transport: str, source: str, max_bytes: int,
                 expected_sender: str | None = None) -> tuple[Agent, Sealed] | Outcome:
    """The sending agent and its envelope, or the answer refusing them.

    Steps 1–3 of the module doc and the policy checks of step 4 that need no
    replay window (status, recipient, channel; each a recorded violation).
    Shared by :func:`receive_envelope` and the profile bundle view.
    """
    wait = ratelimit.blocked("source", source, config().source_failure_rate)
    if wait is not None:
        return Outcome(429, b"", wait, None, "source-limited")
    try:
        sealed = split(data, max_bytes=max_bytes)
    except EnvelopeError as exc:
        if exc.code == "too-large":
            return Outcome(413, reason="too-large")
        _strike(source)
        return Outcome(400, reason="malformed")
    header = sealed.header
    agent = Agent.objects.select_related("tenant").filter(public_id=header.sender).first()
    if agent is None:
        _strike(source)
        return Outcome(401, reason="unknown-agent")
    try:
        verify(sealed, agent.verify_key)
    except EnvelopeError:
        _strike(source)
        return Outcome(401, reason="bad-signature")
    violation = _policy(agent, header, expected_sender)
    if violation is not None:
        return violation_outcome(agent, header, violation, transport, source)
    return agent, sealed


def receive_envelope(data: bytes, *, transport: str, source: str,
                     expected_sender: str | None = None) -> Outcome:
    """Authenticate, check, store and acknowledge one agent message (see module doc).

    ``transport`` is ``https``, ``mqtt`` or ``mail`` (kept with the batch);
    ``source`` names where it came from for per-source limits and the log (client
    address, MQTT client id, mail sender).  ``expected_sender`` is the agent id the
    channel belongs to (the MQTT topic), if the transport knows one.  Do not call it
    inside a transaction: acknowledgements must follow a real commit.
    """
    source = (source or "-")[:200]
    transport = transport[:16]
    result = authenticate(data, transport=transport, source=source,
                          max_bytes=config().max_envelope_bytes,
                          expected_sender=expected_sender)
    if isinstance(result, Outcome):
        return result
    agent, sealed = result
    return _authenticated(agent, sealed, data, transport, source)


def _authenticated(agent: Agent, sealed: Sealed, data: bytes, transport: str,
                   source: str) -> Outcome:
    cfg = config()
    header = sealed.header
    digest = hashlib.sha256(data).hexdigest()
    verdict, _state = ReplayState.from_text(agent.replay_state).check(header.ctr)
    duplicate = False
    if verdict != "new":
        if not _is_duplicate(agent, header.ctr, digest):
            return violation_outcome(agent, header, replay_violation(verdict), transport, source)
        duplicate = True
    if header.kind not in ("batch", "poll"):
        return signed_outcome(agent, header, 400, "wrong-kind",
                       message=gettext("Agents send only batches and polls."))
    if not agent.tenant.active_in_tree:
        return signed_outcome(agent, header, 403, "tenant-inactive",
                       message=gettext("The customer or site of this agent is deactivated."))
    for scope, subject, rate in _limits(agent):
        wait = ratelimit.blocked(scope, subject, rate)
        if wait is not None:
            return _limited(agent, header, scope, wait)
    if header.kind == "batch" and not duplicate and _backlogged():
        return _count_alone(agent, header) or signed_outcome(
            agent, header, 503, "backlog", retry_after=BACKLOG_RETRY_S,
            message=gettext("The server is catching up; try again later."))
    body: BatchBody | PollBody
    try:
        if header.kind == "batch":
            body = body_model(sealed, BatchBody, max_bytes=cfg.max_body_bytes)
        else:
            body = body_model(sealed, PollBody, max_bytes=cfg.max_body_bytes)
    except EnvelopeError as exc:
        status = 413 if exc.code == "too-large" else 400
        return _count_alone(agent, header) or signed_outcome(
            agent, header, status, exc.code, message=str(exc))
    items = body.items if isinstance(body, BatchBody) else []
    if duplicate:
        return _count_alone(agent, header) or signed_outcome(
            agent, header, 200, "duplicate",
            reply=Reply(acked=ack_ranges(items), problems=_problems(items)))
    try:
        return _commit(agent, sealed, data, body, items, digest, transport, source)
    except _OverLimit as over:  # counted in the storing transaction, which rolled back
        return _limited(agent, header, over.scope, over.wait)


# --- request limits --------------------------------------------------------------------


def _limits(agent: Agent) -> tuple[tuple[str, str, str], ...]:
    """(scope, subject, rate) of the limits every agent request counts against."""
    cfg = config()
    return (("agent", agent.public_id, cfg.agent_rate),
            ("tenant", str(agent.tenant_id), cfg.tenant_rate))


def _limited(agent: Agent, header: Header, scope: str, wait: float) -> Outcome:
    return signed_outcome(agent, header, 429, f"{scope}-limited", retry_after=wait,
                          message=gettext("Too many requests; try again later."))


class _OverLimit(Exception):
    """Raised inside the storing transaction to roll it back: the request went over a
    limit while it was being stored (another one was counted first)."""

    def __init__(self, scope: str, wait: float) -> None:
        super().__init__(scope)
        self.scope = scope
        self.wait = wait


def _count(agent: Agent) -> None:
    """Count this request against every limit, in the caller's transaction
    (:class:`_OverLimit` when one is exceeded; the later ones are not counted then).

    Called as the transaction's last statements: on SQLite the write lock is held
    already (a counter write of its own would queue for it again, behind
    normalisation); on PostgreSQL the tenant's counter row, shared by all its
    agents, stays locked only until the commit that follows.
    """
    for scope, subject, rate in _limits(agent):
        wait = ratelimit.count(scope, subject, rate)
        if wait is not None:
            raise _OverLimit(scope, wait)


def _count_alone(agent: Agent, header: Header) -> Outcome | None:
    """Count a request that is answered without being stored (one small transaction);
    the 429 to send instead when that went over a limit, else ``None``."""
    try:
        with transaction.atomic():
            _count(agent)
    except _OverLimit as over:
        return _limited(agent, header, over.scope, over.wait)
    return None


def _commit(agent: Agent, sealed: Sealed, data: bytes, body: BatchBody | PollBody,
            items: list[WireItem], digest: str, transport: str, source: str) -> Outcome:
    header = sealed.header
    now = timezone.now()
    state = body.state
    race: Violation | None = None
    duplicate = False
    commands: list[Command] = []
    schedule = agent.schedule_model()
    with transaction.atomic(durable=True):
        a = Agent.objects.select_for_update().get(pk=agent.pk)
        verdict, replay = ReplayState.from_text(a.replay_state).check(header.ctr)
        if a.status != AgentStatus.ACTIVE:
            race = Violation.SUSPENDED if a.status == AgentStatus.SUSPENDED \
                else Violation.REVOKED
        elif verdict != "new":
            if _is_duplicate(a, header.ctr, digest):
                duplicate = True
            else:
                race = replay_violation(verdict)
        else:
            schedule = a.schedule_model()
            a.replay_state = replay.to_text()
            recent = [t for t in a.recent_envelopes.split(",") if t]
            a.recent_envelopes = ",".join([_digest_tag(header.ctr, digest),
                                           *recent[:RECENT_ENVELOPES - 1]])
            a.last_seen = now
            a.last_transport = transport
            a.last_source = source
            a.last_state = state.model_dump(mode="json")
            a.clock_skew_s = _skew(header.ts, now)
            a.hostname = state.hostname[:255] or a.hostname
            a.version = state.version[:64] or a.version
            a.platform = state.platform[:128] or a.platform
            a.silent_after = silent_after(now, schedule)
            a.overdue_since = None
            a.save(update_fields=[
                "replay_state", "recent_envelopes", "last_seen", "last_transport",
                "last_source", "last_state", "clock_skew_s", "hostname", "version",
                "platform", "silent_after", "overdue_since"])
            if items:
                batch_id = _store_batch(a, header, data, items, digest, transport, source,
                                        now)
                if batch_id is not None:
                    transaction.on_commit(lambda: _enqueue(batch_id))
            commands = take_commands(a, now)
        _count(agent)  # last: rolls everything back when over a limit
    if race is not None:
        return violation_outcome(agent, header, race, transport, source)
    if duplicate:
        return signed_outcome(agent, header, 200, "duplicate",
                       reply=Reply(acked=ack_ranges(items), problems=_problems(items)))
    # Committed: now, and only now, the items may be acknowledged.
    reply = Reply(acked=ack_ranges(items), problems=_problems(items), commands=commands,
                  schedule=schedule if state.schedule_version < a.schedule_version else None,
                  poll_after_s=schedule.command_poll_s)
    return signed_outcome(a, header, 200, "ok", reply=reply)


def _store_batch(agent: Agent, header: Header, data: bytes, items: list[WireItem],
                 digest: str, transport: str, source: str, now: datetime) -> int | None:
    """The raw batch and its item keys; returns the batch id when it brought new items.

    The envelope is kept as received (signature included, so it can be checked
    again); its body is gzip already, unless the agent sent it uncompressed, in
    which case the server compresses the whole envelope.
    """
    compressed = header.enc == "identity"
    stored = zlib.compress(data, 6) if compressed else data
    batch = ReceivedBatch.objects.create(
        agent=agent, received_at=now, ctr=header.ctr, envelope_sha256=digest,
        envelope=stored, envelope_zlib=compressed, size_bytes=len(data),
        item_count=len(items), new_items=0, transport=transport, source=source)
    unique = {(i.store, i.stream, i.seq): i for i in reversed(items)}  # first one wins
    _insert_item_keys(agent.pk, batch.pk, unique.values(), now)
    new = ReceivedItem.objects.filter(batch=batch).count()
    pending = new and ReceivedItem.objects.filter(batch=batch,
                                                  state=ItemState.PENDING).exists()
    ReceivedBatch.objects.filter(pk=batch.pk).update(
        new_items=new, processed_at=None if pending else now)
    return batch.pk if pending else None


def _insert_item_keys(agent_pk: int, batch_pk: int, items: Iterable[WireItem],
                      now: datetime) -> None:
    """One ``INSERT … ON CONFLICT DO NOTHING`` per item, sent as one ``executemany``.

    Why not ``bulk_create(ignore_conflicts=True)``: it compiles every value of every
    row through the ORM, and on SQLite in chunks of a few dozen rows (the variable
    limit) — profiled, that was 60 % of the receiving time for a 500-item batch.
    The unique key (agent, store, stream, seq) still decides what is new; the
    caller counts the rows that point at its batch.
    """
    meta = ReceivedItem._meta
    conn = transaction.get_connection()
    names = ("agent", "store", "stream", "seq", "batch", "priority", "received_at", "state",
             "error")
    # Names from the model, quoted; every value is a parameter.
    column = {f.name: f.column for f in meta.concrete_fields}
    columns = ", ".join(conn.ops.quote_name(column[n]) for n in names)
    table, marks = conn.ops.quote_name(meta.db_table), ", ".join(["%s"] * len(names))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"  # noqa: S608
    received_at = meta.get_field("received_at").get_db_prep_value(now, conn)
    rows = [(agent_pk, i.store, i.stream, i.seq, batch_pk, i.priority, received_at,
             str(ItemState.PENDING.value) if i.stream in STREAMS
             else str(ItemState.PROBLEM.value),
             "" if i.stream in STREAMS else "unknown stream") for i in items]
    with conn.cursor() as cur:
        for start in range(0, len(rows), INSERT_CHUNK):
            cur.executemany(sql, rows[start:start + INSERT_CHUNK])


__all__ = ["Outcome", "ack_ranges", "authenticate", "push_commands", "receive_envelope",
           "replay_violation", "seal_for", "server_ctr", "signed_outcome", "take_commands",
           "violation_outcome"]

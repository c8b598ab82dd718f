"""Normalisation of received batches, after they were acknowledged (background work).

:func:`do_process_batch` reads a stored batch back from its raw envelope and files
each of its *new* items (those whose key row points at this batch and is still
pending):

* ``readings`` and ``alerts`` — ``fleetroom.reading/1`` snapshots, through
  :func:`fleetroom.fleet.services.ingest_readings` for the **agent's** tenant
  (never one named in a payload).  An invalid reading becomes an item problem
  with the reason; the others are stored all the same.
* ``gaps`` — one :class:`~.models.AgentGap` per gap record.
* ``results`` — the outcome of one of **this agent's** commands (a result naming
  another agent's command is a problem, not a write).

The same agent's other waiting batches (up to :data:`GROUP_ITEMS` items) are filed
in the same run, their readings in one ``ingest_readings`` call: after an outage an
agent delivers hundreds of batches faster than they can be normalised, and each
run has fixed costs.  One run per agent at a time in a worker process; a batch
that failed once is retried on its own.

Idempotent, so a crash anywhere re-runs safely: readings are keyed by
(device, taken_at) in the fleet app (a second run finds duplicates), a gap is
keyed by its item, a result is recorded once, and item states are set last.  A
batch that keeps failing is given up after :data:`MAX_ATTEMPTS` with its items
marked as problems; its raw envelope stays for :func:`do_reprocess_batch`.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone
from fleetroom_protocol import SCHEMA_V1, Reading
from fleetroom_protocol.envelope import Sealed, body_bytes, body_model, split
from fleetroom_protocol.messages import (
    STREAM_ALERTS,
    STREAM_GAPS,
    STREAM_READINGS,
    STREAM_RESULTS,
    BatchBody,
    CommandResult,
    WireItem,
)
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from fleetroom.core.scoping import require_permission
from fleetroom.fleet.services import (
    DEFAULT_BATCH,
    FOREIGN_DEVICE,
    IngestError,
    gc_paused,
    ingest_readings,
)
from fleetroom.tenancy.permissions import Permission

from .conf import config
from .models import (
    Agent,
    AgentCommand,
    AgentGap,
    CommandStatus,
    ItemState,
    ReceivedBatch,
    ReceivedItem,
)
from .services import do_note_device_claims

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 5
GROUP_ITEMS: Final = 2000
"""Items one normalisation run files at most (several batches of one agent)."""
GROUP_BATCHES: Final = 40
"""Batches one run takes at most (many small ones: a trickle of alerts)."""
SQLITE_INGEST_BATCH: Final = 100
"""Readings per fleet-ingest transaction on SQLite (elsewhere the ingest's default).

Each transaction holds SQLite's one write lock, and every upload waits for it: at
500 readings a transaction held it ~150–280 ms during a drain, at 100 ~35–45 ms.
Normalisation itself costs the same either way (measured in-process: 24,000
readings, 11.1 s CPU at 500, 11.0 s at 100 — per-transaction costs up, the
duplicate check, which grows with the square of the chunk, down)."""

MAX_ERROR: Final = 480
MAX_RESULT_BYTES: Final = 1 << 20
RESULT_STATUS: Final = {"done": CommandStatus.DONE, "failed": CommandStatus.FAILED,
                        "refused": CommandStatus.REFUSED, "expired": CommandStatus.EXPIRED}


class GapRecord(BaseModel):
    """The payload of a ``gaps`` item (written by the agent's outbox)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["gap"]
    stream: str | None = Field(default=None, max_length=32)
    reason: str = Field(min_length=1, max_length=32)
    count: int = Field(ge=0)
    first_seq: int | None = None
    last_seq: int | None = None
    ranges: list[tuple[int, int]] = Field(default_factory=list, max_length=100_000)
    supersedes: list[tuple[int, int]] = Field(default_factory=list, max_length=100_000)
    detail: dict[str, Any] = Field(default_factory=dict)


@dataclass
class ProcessReport:
    """What one run did with one batch."""

    readings_stored: int = 0
    readings_duplicate: int = 0
    gaps: int = 0
    results: int = 0
    problems: dict[int, str] = field(default_factory=dict)
    """ReceivedItem id → reason."""
    batches: int = 1
    """Batches filed in this run (the agent's waiting ones go together)."""


def _ingest_batch() -> int:
    """:data:`SQLITE_INGEST_BATCH` on SQLite; the fleet ingest's default elsewhere,
    where writers do not queue for one lock."""
    return SQLITE_INGEST_BATCH if connection.vendor == "sqlite" else DEFAULT_BATCH


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 1] + "…"


def _device_label(reading: Reading) -> str:
    """Manufacturer and serial as the agent reported them (for a security event)."""
    ident = reading.identity
    return _short(f"{ident.manufacturer or ident.vendor or ''} {ident.serial or ''}".strip())


def _validation_message(prefix: str, exc: PydanticValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
             for e in errors[:3]]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return _short(f"{prefix}: " + "; ".join(parts) + more)


def parse_reading(payload: Any) -> Reading:
    """An item payload as a reading, or ``ValueError`` with a reason that names the field
    (never the hostile value)."""
    if not isinstance(payload, dict):
        raise ValueError("not a reading: expected a JSON object")
    schema = payload.get("schema")
    if schema != SCHEMA_V1:
        shown = schema if isinstance(schema, str) and len(schema) <= 80 else "?"
        raise ValueError(f"unsupported schema {shown!r} (this server reads {SCHEMA_V1})")
    try:
        return Reading.model_validate(payload)
    except PydanticValidationError as exc:
        raise ValueError(_validation_message("invalid reading", exc)) from None


def _stored(batch: ReceivedBatch) -> Sealed:
    """The stored envelope, split (``ValueError`` when the stored bytes are damaged)."""
    cfg = config()
    raw = bytes(batch.envelope)
    if batch.envelope_zlib:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(raw, cfg.max_envelope_bytes + 1)
    return split(raw, max_bytes=max(cfg.max_envelope_bytes, len(raw)))


def batch_body(batch: ReceivedBatch) -> BatchBody:
    """The batch body, read back from the stored envelope (already verified on receipt;
    a later re-enrollment changes the key, so it is not verified again)."""
    return body_model(_stored(batch), BatchBody, max_bytes=config().max_body_bytes)


class _ReadingItem(BaseModel):
    """A batch item whose payload is parsed as a reading in the same pass."""

    model_config = ConfigDict(extra="ignore")

    store: str
    stream: Literal["readings", "alerts"]
    seq: int
    payload: Reading


class _ReadingsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[_ReadingItem]


Entry = tuple[str, str, int, "Reading | WireItem"]
"""(store, stream, seq, the reading — or the raw item for anything else)."""


def _entries(batch: ReceivedBatch) -> list[Entry]:
    """The items of a stored body, readings parsed.

    Fast path: when every item is a reading (the usual batch) the body is validated
    in one pass straight into :class:`Reading` models — measured, under half the
    time of parsing it into dicts first and validating each payload afterwards, and
    the readings are what is needed.  Any other content (another stream, one invalid
    reading, a payload without ``schema``) takes the general path, where each item
    is checked on its own and an invalid one becomes an item problem with the
    reason.  The two paths accept the same readings.
    """
    sealed = _stored(batch)
    try:
        fast = _ReadingsBody.model_validate_json(
            body_bytes(sealed, max_bytes=config().max_body_bytes))
    except PydanticValidationError:
        pass
    else:
        if all("schema_" in i.payload.model_fields_set for i in fast.items):
            return [(i.store, i.stream, i.seq, i.payload) for i in fast.items]
    body = body_model(sealed, BatchBody, max_bytes=config().max_body_bytes)
    return [(i.store, i.stream, i.seq, i) for i in body.items]


def _reported_at(item: WireItem, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(float(item.created_at), UTC)
    except (OverflowError, OSError, ValueError):
        return fallback


def _gap(agent: Agent, row: ReceivedItem, item: WireItem) -> None:
    try:
        record = GapRecord.model_validate(item.payload)
    except PydanticValidationError as exc:
        raise ValueError(_validation_message("invalid gap record", exc)) from None
    AgentGap.objects.get_or_create(item=row, defaults={
        "agent": agent, "stream": record.stream or "", "reason": record.reason,
        "count": record.count, "first_seq": record.first_seq, "last_seq": record.last_seq,
        "ranges": [list(r) for r in record.ranges],
        "supersedes": [list(r) for r in record.supersedes], "detail": record.detail,
        "reported_at": _reported_at(item, row.received_at), "received_at": row.received_at})


def _result(agent: Agent, item: WireItem, now: datetime) -> None:
    try:
        result = CommandResult.model_validate(item.payload)
    except PydanticValidationError as exc:
        raise ValueError(_validation_message("invalid command result", exc)) from None
    with transaction.atomic():
        cmd = (AgentCommand.objects.select_for_update()
               .filter(agent=agent, command_id=result.command_id).first())
        if cmd is None:
            raise ValueError("result for a command this agent was not given")
        if cmd.result_at is not None:
            return  # recorded already (a re-run, or the agent reported twice)
        data = result.data
        if len(json.dumps(data)) > MAX_RESULT_BYTES:
            data = {"truncated": True}
        cmd.status = RESULT_STATUS[result.outcome]
        cmd.result_detail = result.detail
        cmd.result_data = data
        cmd.result_at = now
        cmd.save(update_fields=["status", "result_detail", "result_data", "result_at"])


def _file_items(agent: Agent, work: list[tuple[ReceivedBatch, list[Entry]]],
                report: ProcessReport) -> list[int]:
    """File every pending item of the batches in ``work`` (one agent's, in order); returns
    the ids filed without problem.  Their readings go to the fleet in one call."""
    keys = (ReceivedItem.objects.filter(batch__in=[b for b, _ in work],
                                        state=ItemState.PENDING)
            .values_list("batch_id", "store", "stream", "seq", "pk"))
    rows = {(batch_pk, store, stream, seq): pk for batch_pk, store, stream, seq, pk in keys}
    done: list[int] = []
    readings: list[tuple[int, Reading]] = []
    now = timezone.now()
    for batch, entries in work:
        for store, stream, seq, content in entries:
            pk = rows.pop((batch.pk, store, stream, seq), None)
            if pk is None:
                continue  # a repeat (filed with its first batch) or filed already
            try:
                if isinstance(content, Reading):
                    readings.append((pk, content))
                    continue
                if stream in (STREAM_READINGS, STREAM_ALERTS):
                    readings.append((pk, parse_reading(content.payload)))
                    continue
                if stream == STREAM_GAPS:
                    _gap(agent, ReceivedItem.objects.get(pk=pk), content)
                    report.gaps += 1
                elif stream == STREAM_RESULTS:
                    _result(agent, content, now)
                    report.results += 1
                else:
                    raise ValueError("unknown stream")
            except ValueError as exc:
                report.problems[pk] = _short(str(exc))
                continue
            done.append(pk)
    for pk in rows.values():  # a key without a body item cannot happen; never leave it hanging
        report.problems[pk] = "item missing from the stored batch"
    if readings:
        try:
            summary = ingest_readings([r for _, r in readings], tenant=agent.tenant,
                                      agent_id=agent.pk, batch_size=_ingest_batch())
        except IngestError as exc:
            for pk, _r in readings:
                report.problems[pk] = _short(str(exc))
        else:
            report.readings_stored += summary.stored
            report.readings_duplicate += summary.duplicates
            rejected = dict(summary.problems)
            for position, (pk, _r) in enumerate(readings):
                if position in rejected:
                    report.problems[pk] = _short(rejected[position])
                else:
                    done.append(pk)
            claims = [position for position, code in summary.problem_codes.items()
                      if code == FOREIGN_DEVICE]
            if claims:
                do_note_device_claims(agent, sorted({_device_label(readings[p][1])
                                                     for p in claims}))
    return done


def _finish(batches: dict[int, str], done: list[int], problems: dict[int, str]) -> None:
    """Item states, then the batches (id → error) marked processed: one transaction."""
    with transaction.atomic():
        for start in range(0, len(done), 500):
            ReceivedItem.objects.filter(pk__in=done[start:start + 500]).update(
                state=ItemState.DONE, error="")
        by_error: dict[str, list[int]] = {}
        for pk, message in problems.items():
            by_error.setdefault(message, []).append(pk)
        for message, pks in by_error.items():
            for start in range(0, len(pks), 500):
                ReceivedItem.objects.filter(pk__in=pks[start:start + 500]).update(
                    state=ItemState.PROBLEM, error=message)
        now = timezone.now()
        by_batch_error: dict[str, list[int]] = {}
        for pk, error in batches.items():
            by_batch_error.setdefault(error, []).append(pk)
        for error, pks in by_batch_error.items():
            ReceivedBatch.objects.filter(pk__in=pks).update(processed_at=now, error=error)


def _give_up(batch: ReceivedBatch, message: str, report: ProcessReport) -> None:
    pending = list(ReceivedItem.objects.filter(batch=batch, state=ItemState.PENDING)
                   .values_list("pk", flat=True))
    problems = dict.fromkeys(pending, message)
    report.problems.update(problems)
    _finish({batch.pk: message}, [], problems)


_locks_guard = threading.Lock()
_agent_locks: dict[int, threading.Lock] = {}


@contextmanager
def _agent_turn(agent_pk: int) -> Iterator[None]:
    """One normalisation run per agent at a time in this process.

    The worker's threads would otherwise file the same group of batches twice over
    (harmless, normalisation is idempotent, but twice the work and, on SQLite, a
    fight for the write lock); the second one waits and then finds its batch done.
    Other processes are not held up — correctness never depends on this lock.
    """
    with _locks_guard:
        lock = _agent_locks.setdefault(agent_pk, threading.Lock())
    with lock:
        yield


def _group(batch: ReceivedBatch, *, alone: bool) -> list[ReceivedBatch]:
    """``batch`` and the agent's other waiting batches, oldest first, up to
    :data:`GROUP_ITEMS` new items and :data:`GROUP_BATCHES` batches in all.

    A drain after an outage brings hundreds of 500-item batches; normalised one by
    one, every batch pays the fixed costs of a fleet ingest run (device lookups,
    previous counters, a commit) for the same devices again.  Batches that failed
    before (``attempts`` > 0) are never grouped: each is retried on its own, so one
    bad batch cannot hold up the others.
    """
    if alone or batch.attempts > 0:
        return [batch]
    group = [batch]
    total = batch.new_items
    others = (ReceivedBatch.objects.select_related("agent__tenant")
              .filter(agent_id=batch.agent_id, processed_at__isnull=True, attempts=0)
              .exclude(pk=batch.pk).order_by("pk")[:GROUP_BATCHES - 1])
    for other in others:
        if total + other.new_items > GROUP_ITEMS:
            break
        group.append(other)
        total += other.new_items
    return sorted(group, key=lambda b: b.pk)


def do_process_batch(batch_id: int, *, alone: bool = False) -> ProcessReport | None:
    """Normalise one batch, with the same agent's other waiting batches unless ``alone``
    (see :func:`_group`); ``None`` when it is gone or done already.  Safe to run
    again after a crash, and concurrently with itself."""
    agent_pk = (ReceivedBatch.objects.filter(pk=batch_id, processed_at__isnull=True)
                .values_list("agent_id", flat=True).first())
    if agent_pk is None:
        return None
    with _agent_turn(agent_pk):
        batch = (ReceivedBatch.objects.select_related("agent__tenant")
                 .filter(pk=batch_id, processed_at__isnull=True).first())
        if batch is None:
            return None  # filed meanwhile, with another batch's group
        group = _group(batch, alone=alone)
        ReceivedBatch.objects.filter(pk__in=[b.pk for b in group]).update(
            attempts=F("attempts") + 1)
        # Parsing a group makes a few hundred thousand objects that live until it is
        # filed; the collector walked them every 700 allocations (half the parsing
        # time, measured).
        with gc_paused():
            return _process(batch, group)


def _process(batch: ReceivedBatch, group: list[ReceivedBatch]) -> ProcessReport:
    attempts = batch.attempts + 1
    report = ProcessReport(batches=len(group))
    try:
        work: list[tuple[ReceivedBatch, list[Entry]]] = []
        errors: dict[int, str] = {}
        for member in group:
            try:
                work.append((member, _entries(member)))
            except ValueError as exc:  # EnvelopeError or zlib: the stored bytes are damaged
                errors[member.pk] = _short(f"stored batch unreadable: {exc}")
        for pk, message in errors.items():
            pending = ReceivedItem.objects.filter(batch_id=pk, state=ItemState.PENDING)
            report.problems.update(dict.fromkeys(pending.values_list("pk", flat=True),
                                                 message))
        done = _file_items(batch.agent, work, report) if work else []
        _finish({b.pk: errors.get(b.pk, "") for b in group}, done, report.problems)
    except Exception as exc:
        if attempts < MAX_ATTEMPTS or len(group) > 1:
            raise  # the task is retried (alone); the sweep catches what the queue lost
        log.exception("giving up on batch %s after %d attempts", batch.pk, attempts)
        report = ProcessReport()
        _give_up(batch, _short(f"processing failed {attempts} times: {type(exc).__name__}"),
                 report)
    return report


def do_process_pending(*, older_than: timedelta = timedelta(seconds=60),
                       limit: int = 200) -> int:
    """Process batches whose queued task was lost (crash between commit and enqueue,
    a restarted worker); returns how many batches were processed."""
    cutoff = timezone.now() - older_than
    ids = list(ReceivedBatch.objects.filter(processed_at__isnull=True, received_at__lt=cutoff)
               .order_by("received_at").values_list("pk", flat=True)[:limit])
    count = 0
    for pk in ids:
        try:
            report = do_process_batch(pk)
            if report is not None:
                count += report.batches
        except Exception:
            log.exception("batch %s failed; it will be tried again", pk)
    return count


def do_reprocess_batch(batch: ReceivedBatch, *, acting_user: Any,
                       request: HttpRequest | None = None) -> ProcessReport | None:
    """File a batch's problem items again (e.g. after its tenant was reactivated)."""
    del request  # no audit row: re-running normalisation changes no decision
    require_permission(acting_user, Permission.MANAGE_AGENTS, batch.agent.tenant)
    with transaction.atomic():
        ReceivedItem.objects.filter(batch=batch, state=ItemState.PROBLEM).exclude(
            error="unknown stream").update(state=ItemState.PENDING, error="")
        ReceivedBatch.objects.filter(pk=batch.pk).update(processed_at=None, attempts=0,
                                                         error="")
    return do_process_batch(batch.pk, alone=True)  # the report is about this batch only


def do_prune_received(*, now: datetime | None = None, chunk: int = 1000,
                      max_chunks: int = 100) -> tuple[int, int]:
    """Delete processed raw batches past ``raw_retention_days`` and item keys past
    ``item_retention_days`` (keys of gap records stay with their gap).  Bounded per
    run; returns (batches, items) deleted."""
    now = now or timezone.now()
    cfg = config()
    batches = items = 0
    batch_cutoff = now - timedelta(days=cfg.raw_retention_days)
    item_cutoff = now - timedelta(days=cfg.item_retention_days)
    for _ in range(max_chunks):
        ids = list(ReceivedBatch.objects.filter(processed_at__lt=batch_cutoff)
                   .order_by("pk").values_list("pk", flat=True)[:chunk])
        if not ids:
            break
        with transaction.atomic():
            ReceivedItem.objects.filter(batch_id__in=ids).update(batch=None)
            batches += ReceivedBatch.objects.filter(pk__in=ids).delete()[0]
    for _ in range(max_chunks):
        ids = list(ReceivedItem.objects.filter(received_at__lt=item_cutoff, gap__isnull=True)
                   .exclude(state=ItemState.PENDING)
                   .order_by("pk").values_list("pk", flat=True)[:chunk])
        if not ids:
            break
        items += ReceivedItem.objects.filter(pk__in=ids).delete()[0]
    return batches, items

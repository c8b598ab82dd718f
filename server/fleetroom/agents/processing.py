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

Idempotent, so a crash anywhere re-runs safely: readings are keyed by
(device, taken_at) in the fleet app (a second run finds duplicates), a gap is
keyed by its item, a result is recorded once, and item states are set last.  A
batch that keeps failing is given up after :data:`MAX_ATTEMPTS` with its items
marked as problems; its raw envelope stays for :func:`do_reprocess_batch`.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone
from fleetroom_protocol import SCHEMA_V1, Reading
from fleetroom_protocol.envelope import body_model, split
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
from fleetroom.fleet.services import IngestError, ingest_readings
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

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 5
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


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 1] + "…"


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


def batch_body(batch: ReceivedBatch) -> BatchBody:
    """The batch body, read back from the stored envelope (already verified on receipt;
    a later re-enrollment changes the key, so it is not verified again)."""
    cfg = config()
    raw = bytes(batch.envelope)
    if batch.envelope_zlib:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(raw, cfg.max_envelope_bytes + 1)
    sealed = split(raw, max_bytes=max(cfg.max_envelope_bytes, len(raw)))
    return body_model(sealed, BatchBody, max_bytes=cfg.max_body_bytes)


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


def _file_items(batch: ReceivedBatch, body: BatchBody, report: ProcessReport) -> list[int]:
    """File every pending item of ``batch``; returns the ids filed without problem."""
    agent = batch.agent
    rows = {(r.store, r.stream, r.seq): r
            for r in ReceivedItem.objects.filter(batch=batch, state=ItemState.PENDING)}
    done: list[int] = []
    readings: list[tuple[ReceivedItem, Reading]] = []
    now = timezone.now()
    for item in body.items:
        row = rows.pop((item.store, item.stream, item.seq), None)
        if row is None:
            continue  # a repeat (filed with its first batch) or filed already
        try:
            if item.stream in (STREAM_READINGS, STREAM_ALERTS):
                readings.append((row, parse_reading(item.payload)))
                continue
            if item.stream == STREAM_GAPS:
                _gap(agent, row, item)
                report.gaps += 1
            elif item.stream == STREAM_RESULTS:
                _result(agent, item, now)
                report.results += 1
            else:
                raise ValueError("unknown stream")
        except ValueError as exc:
            report.problems[row.pk] = _short(str(exc))
            continue
        done.append(row.pk)
    for row in rows.values():  # a key without a body item cannot happen; never leave it hanging
        report.problems[row.pk] = "item missing from the stored batch"
    if readings:
        try:
            summary = ingest_readings([r for _, r in readings], tenant=agent.tenant,
                                      agent_id=agent.pk)
        except IngestError as exc:
            for row, _r in readings:
                report.problems[row.pk] = _short(str(exc))
        else:
            report.readings_stored += summary.stored
            report.readings_duplicate += summary.duplicates
            rejected = dict(summary.problems)
            for position, (row, _r) in enumerate(readings):
                if position in rejected:
                    report.problems[row.pk] = _short(rejected[position])
                else:
                    done.append(row.pk)
    return done


def _finish(batch: ReceivedBatch, done: list[int], problems: dict[int, str],
            error: str = "") -> None:
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
        ReceivedBatch.objects.filter(pk=batch.pk).update(processed_at=timezone.now(),
                                                         error=error)


def do_process_batch(batch_id: int) -> ProcessReport | None:
    """Normalise one batch (``None`` when it is gone or done already).  Safe to run
    again after a crash, and concurrently with itself."""
    batch = (ReceivedBatch.objects.select_related("agent__tenant")
             .filter(pk=batch_id, processed_at__isnull=True).first())
    if batch is None:
        return None
    ReceivedBatch.objects.filter(pk=batch.pk).update(attempts=F("attempts") + 1)
    attempts = batch.attempts + 1
    report = ProcessReport()
    try:
        try:
            body = batch_body(batch)
        except ValueError as exc:  # EnvelopeError or zlib: the stored bytes are damaged
            pending = list(ReceivedItem.objects.filter(batch=batch, state=ItemState.PENDING)
                           .values_list("pk", flat=True))
            message = _short(f"stored batch unreadable: {exc}")
            report.problems = dict.fromkeys(pending, message)
            _finish(batch, [], report.problems, message)
            return report
        done = _file_items(batch, body, report)
        _finish(batch, done, report.problems)
    except Exception as exc:
        if attempts < MAX_ATTEMPTS:
            raise  # the task is retried; the sweep catches what the queue lost
        log.exception("giving up on batch %s after %d attempts", batch.pk, attempts)
        pending = list(ReceivedItem.objects.filter(batch=batch, state=ItemState.PENDING)
                       .values_list("pk", flat=True))
        message = _short(f"processing failed {attempts} times: {type(exc).__name__}")
        report.problems = dict.fromkeys(pending, message)
        _finish(batch, [], report.problems, message)
    return report


def do_process_pending(*, older_than: timedelta = timedelta(seconds=60),
                       limit: int = 200) -> int:
    """Process batches whose queued task was lost (crash between commit and enqueue,
    a restarted worker); returns how many were processed."""
    cutoff = timezone.now() - older_than
    ids = list(ReceivedBatch.objects.filter(processed_at__isnull=True, received_at__lt=cutoff)
               .order_by("received_at").values_list("pk", flat=True)[:limit])
    count = 0
    for pk in ids:
        try:
            if do_process_batch(pk) is not None:
                count += 1
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
    return do_process_batch(batch.pk)


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

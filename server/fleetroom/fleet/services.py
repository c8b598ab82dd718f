"""Every write of the fleet app (architecture rule 4).

* :func:`ingest_reading` / :func:`ingest_readings` — normalised readings in.
* :func:`do_rollup_and_prune` — the retention tiers (called by the periodic task).
* :func:`do_mark_not_reporting` — devices whose readings stopped.
* :func:`do_update_device` — what people maintain (site, location, tags, asset
  number, cost centre); :func:`do_audit_export` — the audit rows of an export.

Ingest, and why it looks the way it does
-----------------------------------------

**Idempotency key: (device, taken_at)**, a unique constraint on ``Reading``.  A
reading is a snapshot of one device at one instant, so the same snapshot arriving
twice (retried upload, re-imported file, two transports) is recognised whatever
its transport envelope, and changes nothing: no second header, no second set of
counters, no second alert.  Device resolution is a pure lookup until the duplicate
check has passed.

**Newest wins for current state.**  Only a reading newer than the device's
``last_seen`` updates the device (address, firmware, status), opens or closes
alerts and yields counter deltas.  An older reading arriving late is stored as
history, but cannot move a device back to an old customer, reopen an alert or
rewrite the usage already attributed (its counters get ``delta=None``; the
following reading's delta already covers the span).

**Throughput.**  Work is done per chunk of readings (``batch_size``, default 500)
in one transaction: one query each for the chunk's devices (locked, in id order,
read as plain rows), duplicates, previous counter values and open alerts; Python
builds plain rows; the chunk's new devices and the reading headers go in with
multi-row ``INSERT … RETURNING`` (ids mapped back by identity key and idempotency
key, since SQLite does not promise RETURNING order); counter values and supply
levels with one ``executemany`` INSERT per table; devices with one ``executemany``
UPDATE per set of changed columns (usually just ``last_seen`` and
``last_reading``).  That is standard SQL through Django's connection, portable to
both databases (rule 9), and skips building a model instance per row, which is
most of the cost of ``bulk_create`` at 100k rows.  Anything rare (events, alert
changes, status changes, audit rows) uses the ORM.  Across the chunks of one
:func:`ingest_readings` call, the payloads of the next chunk are encoded in a
worker thread while this chunk commits, and the previous counters of a device
whose last reading an earlier chunk wrote are taken from what it wrote instead
of being read back (see :class:`_PayloadWorker`, :class:`_WrittenCounters`).
``bench/server_ingest.py`` measures it against the database drivers' own
``executemany`` of the same rows.

**Concurrency.**  Two workers can race on a new device or the same reading.  The
unique constraints decide; the loser's chunk rolls back and is retried once, when
the winner's rows are visible and are found as existing device or duplicate.

**Audit.**  On the *reporting* tenant's chain (one chain per transaction, as
:mod:`~fleetroom.core.audit` asks): ``device.moved``, ``device.serial_changed`` and
``device.identity_upgraded`` one row per device, ``device.claim_refused`` one per
refused reading (another dealer's device) — identity decisions a person may
have to review — and ``device.discovered`` one row per chunk listing the devices it
created (an agent's first upload brings hundreds; a hash-chained row each cost
two thirds of that batch's time).  Readings themselves are data, not decisions,
and are not audited.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import itertools
import operator
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connections, models, router, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from fleetroom_protocol import Alert, Reading, counter_delta

from fleetroom.core import audit
from fleetroom.core.scoping import SYSTEM, require_permission, scope
from fleetroom.tenancy.models import Tenant, TenantKind
from fleetroom.tenancy.permissions import Permission

from . import conf
from .identity import DeviceIdentity, NoIdentity, identify, manufacturer_key, serial_key
from .models import (
    SUPPLY_ATTENTION_STATES,
    AlertRecord,
    CounterDaily,
    CounterValue,
    Device,
    DeviceEvent,
    DeviceModel,
    DeviceStatus,
    EventKind,
    IdentityKind,
    RollupCursor,
    StatusSample,
    SupplyLevel,
    Tag,
)
from .models import Reading as ReadingRow
from .schemas import (
    STRING_LIST,
    DeviceAudit,
    DevicesDiscovered,
    DevicesExported,
    DeviceUpdated,
    DiscoveredDevice,
    EventDetails,
    ExportFilters,
    FieldChange,
)

INT64_MAX = (1 << 63) - 1
PRT_ALERT_TABLE = "1.3.6.1.2.1.43.18"
DEFAULT_BATCH = 500
INGEST_TENANT_KINDS = frozenset({TenantKind.SITE, TenantKind.CUSTOMER})
_PAYLOAD_LEVEL = 1
"""zlib level 1: half the CPU of level 6 for ~6 % more bytes (measured on agent readings)."""


class IngestError(ValueError):
    """The call itself is wrong (e.g. readings sent to a dealer node); nothing was stored."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one reading."""

    outcome: Literal["stored", "duplicate", "rejected"]
    device_id: int | None = None
    reading_id: int | None = None
    device_created: bool = False
    identity_weak: bool = False
    """Matched or created without manufacturer + serial."""
    events: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    """Values that could not be stored as rows (kept in the payload)."""
    error: str | None = None
    code: str | None = None
    """Why a reading was rejected, for machines: :data:`FOREIGN_DEVICE` or ``None``."""


FOREIGN_DEVICE = "foreign_device"
"""Rejection code: the reading names a strongly identified device of another dealer."""


@dataclass
class IngestSummary:
    """Counts over one :func:`ingest_readings` call."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: list[tuple[int, str]] = field(default_factory=list)
    """(position in the input, why it was rejected)."""
    problem_codes: dict[int, str] = field(default_factory=dict)
    """Position → :attr:`IngestResult.code` for rejections that carry one."""
    warnings: list[tuple[int, str]] = field(default_factory=list)
    created_device_ids: set[int] = field(default_factory=set)
    touched_device_ids: set[int] = field(default_factory=set)

    @property
    def new_devices(self) -> int:
        """Devices created by this call."""
        return len(self.created_device_ids)

    @property
    def updated_devices(self) -> int:
        """Devices that existed before and received at least one new reading."""
        return len(self.touched_device_ids - self.created_device_ids)

    def add(self, position: int, result: IngestResult) -> None:
        """Fold one result in."""
        if result.outcome == "stored":
            self.stored += 1
        elif result.outcome == "duplicate":
            self.duplicates += 1
        else:
            self.rejected += 1
            self.problems.append((position, result.error or "rejected"))
            if result.code is not None:
                self.problem_codes[position] = result.code
        if result.device_id is not None and result.outcome == "stored":
            self.touched_device_ids.add(result.device_id)
            if result.device_created:
                self.created_device_ids.add(result.device_id)
        self.events.update(result.events)
        self.warnings.extend((position, w) for w in result.warnings)


# --- public API -------------------------------------------------------------------


def ingest_reading(reading: Reading, *, tenant: Tenant, agent_id: int | None = None,
                   acting_user: Any = None) -> IngestResult:
    """Store one normalised reading for ``tenant`` (a site, or a customer without sites).

    Idempotent: the same reading again returns ``outcome="duplicate"`` and writes
    nothing.  ``acting_user`` ``None`` or :data:`~fleetroom.core.scoping.SYSTEM`
    means the collection pipeline (an agent's upload, the CLI import); a person
    must hold ``manage_agents`` on ``tenant``.
    """
    results = _ingest_chunk([(0, reading)], tenant, agent_id, acting_user)
    return results[0][1]


def ingest_readings(readings: Iterable[Reading], *, tenant: Tenant,
                    agent_id: int | None = None, acting_user: Any = None,
                    batch_size: int = DEFAULT_BATCH,
                    on_result: Callable[[int, IngestResult], None] | None = None,
                    ) -> IngestSummary:
    """Store many readings, one transaction per ``batch_size`` readings.

    Same rules and result as :func:`ingest_reading` for each item; a rejected
    reading (no identity, values the database cannot hold) is reported in
    ``problems`` with its position and never stops the others.  ``on_result``
    receives ``(position, result)`` for every input, e.g. to map positions back to
    line numbers.  ``readings`` is read one batch ahead of the batch being stored.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    summary = IngestSummary()
    iterator = enumerate(readings)
    chunk = list(islice(iterator, batch_size))
    payloads: _Payloads | None = None
    written = _WrittenCounters()
    with _PayloadWorker() as worker:
        while chunk:
            # One chunk ahead, so that its payloads can be encoded while this one commits.
            following = list(islice(iterator, batch_size))
            ahead = worker.ahead(following) if following else None
            stored = 0
            for position, result in _ingest_chunk(chunk, tenant, agent_id, acting_user,
                                                  payloads=payloads, before_commit=ahead,
                                                  written=written):
                stored += result.outcome == "stored"
                summary.add(position, result)
                if on_result is not None:
                    on_result(position, result)
            payloads = worker.taken()
            # Encoding ahead is a guess that the readings are new; a re-sent batch is
            # all duplicates, whose payloads would be thrown away.
            worker.enabled = 2 * stored >= len(chunk)
            chunk = following
    return summary


# --- acceptance -------------------------------------------------------------------


@functools.cache
def _limit(model: type[models.Model], name: str) -> int:
    length = model._meta.get_field(name).max_length  # type: ignore[union-attr]
    assert length is not None
    return int(length)


_BOUNDED_PATHS: tuple[tuple[str, str, type[models.Model], str], ...] = (
    ("identity", "manufacturer", Device, "manufacturer"),
    ("identity", "vendor", Device, "vendor"),
    ("identity", "serial", Device, "serial"),
    ("identity", "model", DeviceModel, "name"),
    ("identity", "ip", Device, "ip"),
    ("identity", "hostname", Device, "hostname"),
    ("identity", "firmware", Device, "firmware"),
    ("identity", "sys_name", Device, "sys_name"),
    ("identity", "device_kind", Device, "device_kind"),
    ("capabilities", "marker_technology", DeviceModel, "marker_technology"),
    ("status", "device_status", Device, "device_status"),
    ("status", "printer_status", Device, "printer_status"),
    ("status", "error_state_raw", Device, "error_state_raw"),
)
_ITEM_BOUNDS: tuple[tuple[str, str, type[models.Model], str], ...] = (
    ("counters", "name", CounterValue, "name"),
    ("supplies", "index", SupplyLevel, "supply_index"),
    ("supplies", "type", SupplyLevel, "supply_type"),
    ("alerts", "code", AlertRecord, "code"),
    ("alerts", "group", AlertRecord, "group"),
    ("alerts", "training_level", AlertRecord, "training_level"),
)


@functools.cache
def _limits() -> tuple[tuple[tuple[str, str, int], ...], tuple[tuple[str, str, int], ...],
                       tuple[tuple[str, str, int], ...]]:
    """(section, attribute, max length) of the bounded values, from the models."""
    top = tuple((s, a, _limit(m, n)) for s, a, m, n in _BOUNDED_PATHS)
    reading = (("credential", "credential", _limit(ReadingRow, "credential")),
               ("target", "target", _limit(ReadingRow, "target")))
    items = tuple((s, a, _limit(m, n)) for s, a, m, n in _ITEM_BOUNDS)
    return top, reading, items


@functools.cache
def _scalar_bounds() -> tuple[Callable[[Reading], tuple[Any, ...]], tuple[tuple[str, int], ...]]:
    """One C-level getter for every bounded single value of a reading (sections'
    attributes, then the reading's own), with its label and limit, in that order.

    ``storage_problems`` runs for every reading; fifteen nested ``getattr`` pairs
    were a tenth of its time.
    """
    top, direct, _ = _limits()
    paths = [f"{s}.{a}" for s, a, _ in top] + [a for _, a, _ in direct]
    bounds = tuple((f"{s}.{a}", lim) for s, a, lim in top) + tuple(
        (p, lim) for p, _, lim in direct)
    return operator.attrgetter(*paths), bounds


def storage_problems(reading: Reading, *, now: datetime | None = None) -> list[str]:
    """Why this reading cannot be stored as it is (``[]`` when it can).

    The protocol model already refuses malformed readings; this refuses what is
    well-formed but cannot be a real device's data or stored faithfully: a time
    without a time zone or far in the future, and names and codes longer than
    their columns (truncating them could merge two different things).
    """
    return _storage_problems(reading, _latest_taken(now or timezone.now()))


def _latest_taken(now: datetime) -> datetime:
    """The newest ``taken_at`` accepted at ``now`` (the configured clock skew later)."""
    return now + timedelta(seconds=conf.max_future_skew_seconds())


def _storage_problems(reading: Reading, latest: datetime) -> list[str]:
    out: list[str] = []
    taken = reading.taken_at
    if taken.tzinfo is None or taken.utcoffset() is None:
        out.append("taken_at: has no time zone (expected e.g. 2026-01-31T12:00:00Z)")
    elif taken > latest:
        out.append(f"taken_at: {taken.isoformat()} is in the future (agent clock wrong?)")
    if reading.duration_ms > INT64_MAX:
        out.append("duration_ms: out of range")
    get, bounds = _scalar_bounds()
    for value, (label, limit) in zip(get(reading), bounds, strict=True):
        if value is not None and len(value) > limit:
            out.append(f"{label}: longer than {limit} characters")
    items = _limits()[2]
    if reading.profile is not None and len(reading.profile.name) > (
            limit := _limit(ReadingRow, "profile")):
        out.append(f"profile.name: longer than {limit} characters")
    for section, attr, limit in items:
        objs = getattr(reading, section)
        if not objs:
            continue
        for i, value in enumerate(map(operator.attrgetter(attr), objs)):
            if value is not None and len(value if isinstance(value, str) else str(value)
                                         ) > limit:
                out.append(f"{section}.{i}.{attr}: longer than {limit} characters")
    return out


def _int64(value: int | None, where: str, warnings: list[str]) -> int | None:
    if value is None or -INT64_MAX - 1 <= value <= INT64_MAX:
        return value
    warnings.append(f"{where}: {value} does not fit a 64-bit column; kept in the payload only")
    return None


# --- status and alerts ------------------------------------------------------------


def status_summary(reading: Reading) -> DeviceStatus:
    """ok / warning / error / unknown from what the device said, nothing else.

    A critical alert or hrDeviceStatus ``down`` is an error; a warning alert or
    hrDeviceStatus ``warning``/``testing`` a warning.  Alerts of severity
    ``other``/``unknown`` are recorded but do not colour the summary.  With no
    device status and no readable alert table the answer is ``unknown``.
    """
    severities = {a.severity for a in reading.alerts}
    device_status = reading.status.device_status
    if "critical" in severities or device_status == "down":
        return DeviceStatus.ERROR
    if severities & {"warning", "warningBinaryChangeEvent"} or device_status in {
            "warning", "testing"}:
        return DeviceStatus.WARNING
    if device_status == "running":
        return DeviceStatus.OK
    if "prtAlertTable" in complete_alert_sources(reading) and reading.status.printer_status:
        return DeviceStatus.OK
    return DeviceStatus.UNKNOWN


def complete_alert_sources(reading: Reading) -> set[str]:
    """Alert sources this reading read completely, so an absent alert is really gone.

    An alert table that timed out or was cut short says nothing about which alerts
    cleared; closing them would invent a recovery.
    """
    missing = {m.field for m in reading.missing}
    out: set[str] = set()
    alerts_unknown = any(f == "alerts" or f.startswith("alerts.") for f in missing)
    table_broken = any(PRT_ALERT_TABLE in e for e in reading.errors)
    if not alerts_unknown and not table_broken:
        out |= {"prtAlertTable", "vendor"}
    if reading.status.error_state_raw is not None:
        out.add("hrPrinterDetectedErrorState")
    return out


def alert_key(a: Alert) -> str:
    """What makes an alert in two readings the same occurrence."""
    parts = (a.source, a.code, "" if a.index is None else str(a.index), a.group or "",
             "" if a.group_index is None else str(a.group_index))
    return ":".join(parts)


# --- the chunk engine ---------------------------------------------------------------


def _check_tenant(tenant: Tenant, acting_user: Any) -> None:
    if tenant.pk is None:
        raise IngestError("tenant is not saved")
    if tenant.kind not in INGEST_TENANT_KINDS:
        raise IngestError(f"readings belong to a site or a customer, not to a {tenant.kind}")
    if not tenant.active_in_tree:
        raise IngestError(f"tenant {tenant.pk} is deactivated")
    if acting_user is not None and acting_user is not SYSTEM:
        require_permission(acting_user, Permission.MANAGE_AGENTS, tenant)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while one chunk is built and written (also used
    around a whole normalisation run, :mod:`fleetroom.agents.processing`).

    A 500-reading chunk allocates a few hundred thousand short-lived containers
    (row lists, model instances, pending records) that refcounting frees.  The
    collector still ran a gen-0/1 pass every 700 allocations over them: measured,
    7-8 % of SQLite ingest time.  The pause is bounded by one chunk, and a cycle
    made meanwhile (none is expected) is simply collected once it is back on.  The
    collector is switched back on afterwards only if it was on before
    (so a caller that disabled it keeps it disabled; with concurrent chunks in
    threads the worst case is that it stays on, the default).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@functools.lru_cache(maxsize=1024)
def _model_key_of(manufacturer: str | None, model: str | None) -> tuple[str, str] | None:
    """(manufacturer key, model name key) of a model as reported, ``None`` when either
    is unknown.  Cached: a fleet has few models, each reported in every reading."""
    m_key = manufacturer_key(manufacturer)
    name = (model or "").strip()
    if not m_key or not name:
        return None
    return m_key, " ".join(name.upper().split())


def _ingest_chunk(items: Sequence[tuple[int, Reading]], tenant: Tenant, agent_id: int | None,
                  acting_user: Any, *, payloads: _Payloads | None = None,
                  before_commit: Callable[[], None] | None = None,
                  written: _WrittenCounters | None = None,
                  ) -> list[tuple[int, IngestResult]]:
    _check_tenant(tenant, acting_user)
    for attempt in (1, 2):
        try:
            with gc_paused(), transaction.atomic():
                chunk = _Chunk(tenant, agent_id, acting_user, items, payloads, written)
                results = chunk.run()
                if before_commit is not None:
                    before_commit()
            if written is not None:  # committed: what it wrote is what others will read
                written.update(chunk.written)
            return results
        except (IntegrityError, OperationalError):
            # A concurrent writer created the same device or reading first (or, on
            # PostgreSQL, a deadlock was broken).  Its rows are visible now.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


_NewEvent = tuple[EventKind, EventDetails, "_Dev | None"]


_Prev = tuple[int, str, "int | None"]
"""A counter's previous value, unit and bit width."""

_Written = tuple[int, datetime, dict[str, _Prev]]
"""A device's last reading as a chunk wrote it: id, ``taken_at``, counters by name."""


class _WrittenCounters:
    """The counters of each device's last reading stored by this call, by device id.

    A chunk needs every device's previous counters: the rows of its last reading,
    which, in an import of many readings per device, an earlier chunk of the same
    call has just written (reading them back was a tenth of SQLite ingest time).
    Counter rows never change once written, so while the locked device row still
    names that reading (same id, same ``last_seen``: no other writer moved the device
    on meanwhile), these are exactly the rows the query would return; otherwise the
    chunk reads them.  Only committed chunks add here.  Bounded: the devices seen
    longest ago are forgotten (and read from the database if they come back).
    """

    LIMIT = 5000

    def __init__(self) -> None:
        self.by_device: dict[int, _Written] = {}

    def get(self, device_id: int, reading_id: int, taken: datetime) -> dict[str, _Prev] | None:
        """The counters of ``reading_id`` taken at ``taken``, if this call wrote them."""
        entry = self.by_device.get(device_id)
        if entry is None or entry[0] != reading_id or entry[1] != taken:
            return None
        return entry[2]

    def update(self, entries: dict[int, _Written]) -> None:
        by_device = self.by_device
        for device_id, entry in entries.items():
            by_device.pop(device_id, None)  # to the end: the newest are kept
            by_device[device_id] = entry
        for device_id in list(islice(by_device, max(0, len(by_device) - self.LIMIT))):
            del by_device[device_id]


@dataclass(slots=True)
class _Item:
    position: int
    reading: Reading
    ident: DeviceIdentity
    taken: datetime
    taken_db: Any
    warnings: list[str]
    matched_weak: bool = False
    model_key: tuple[str, str] | None = None
    """:meth:`_Chunk._model_key` of the reading, computed once at acceptance."""


@dataclass(slots=True, eq=False)
class _Dev:
    """A device's row as ingest reads and changes it: its id, then the
    :data:`_DEVICE_STATE_FIELDS` (by attribute name), then ``first_seen``.

    Not a :class:`~fleetroom.fleet.models.Device`: building a model instance per
    device and chunk cost half of loading a chunk, and ``bulk_create``'s per-field
    work for new ones as much as their INSERT.  Values are as the model instance
    would hold them (aware UTC times, ``""`` for unknown text, the model's defaults
    for a new device), so the rows written are the same.
    """

    pk: Any
    """The device's id; ``None`` until a new device is inserted at flush."""
    tenant_id: int
    location_id: int | None
    identity_key: str
    identity_kind: str
    identity_weak: bool
    manufacturer: str
    serial: str
    vendor: str
    model_id: int | None
    device_kind: str
    ip: str
    mac: str
    hostname: str
    firmware: str
    sys_name: str
    sys_location: str
    last_seen: datetime
    last_reading_id: int | None
    status: str
    status_changed_at: datetime | None
    device_status: str
    printer_status: str
    error_state_raw: str
    supplies_attention: int
    first_seen: datetime | None = None
    """Set for new devices only (loaded ones never change it)."""


@dataclass(slots=True)
class _Pending:
    """One reading on its way in.  Rows are lists whose first two cells (reading id,
    device id) are filled at flush, when both ids exist."""

    item: _Item
    device: _Dev
    created: bool
    reading_id: int | None = None
    header_row: list[Any] = field(default_factory=list)
    counter_rows: list[list[Any]] = field(default_factory=list)
    supply_rows: list[list[Any]] = field(default_factory=list)
    duplicate: bool = False
    events: list[str] = field(default_factory=list)
    previous_seen: datetime | None = None
    """The device's ``last_seen`` before this reading (for closing alerts)."""
    refused: str | None = None
    """Why this reading is not stored (the device belongs to another dealer)."""


def compress_payload(reading: Reading) -> bytes:
    """The reading as received, canonical wire JSON, zlib-compressed (~2.5× smaller)."""
    return zlib.compress(reading.to_json().encode("utf-8"), _PAYLOAD_LEVEL)


_Payloads = Future[list[bytes]]
"""The payloads of one chunk's readings, in the chunk's order."""


def _compress_all(items: Sequence[tuple[int, Reading]]) -> list[bytes]:
    return [compress_payload(r) for _, r in items]


class _PayloadWorker:
    """Encodes the next chunk's payloads in one thread while this chunk commits.

    Encoding (JSON, then zlib) is a seventh of ingest's time and touches nothing but
    the reading.  A commit leaves the interpreter free for its whole duration (the
    database writes its log), so the thread started just before it has the
    interpreter to itself; zlib itself also runs beside the main thread.  Whatever
    is not done when the chunk needs it is waited for, which is never slower than
    encoding in the main thread.  The thread is started at the first chunk that
    has a successor, and joined when :func:`ingest_readings` returns.
    """

    def __init__(self) -> None:
        self.pool: ThreadPoolExecutor | None = None
        self.pending: _Payloads | None = None
        self.enabled = True

    def __enter__(self) -> _PayloadWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def ahead(self, items: Sequence[tuple[int, Reading]]) -> Callable[[], None] | None:
        """What to call right before the current chunk commits (at most once acts)."""
        if not self.enabled:
            return None

        def submit() -> None:
            if self.pending is not None or not self.enabled:
                return
            try:
                if self.pool is None:
                    self.pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-payload")
                self.pending = self.pool.submit(_compress_all, items)
            except RuntimeError:  # no thread to be had (interpreter shutting down …)
                self.enabled = False  # the chunks encode their own payloads
        return submit

    def taken(self) -> _Payloads | None:
        """The payloads submitted during the chunk just done (``None`` if none)."""
        pending, self.pending = self.pending, None
        return pending


def _db(model: type[models.Model]) -> Any:
    return connections[router.db_for_write(model)]


@contextlib.contextmanager
def _bulk_cursor(conn: Any) -> Iterator[Any]:
    """A cursor for statements with thousands of rows of parameters.

    On PostgreSQL Django opens connections that bind parameters client-side
    (psycopg's ``ClientCursor``: every value quoted into the SQL text in Python) and
    never prepare statements (``prepare_threshold=None``, for PgBouncer).  For a bulk
    ``executemany`` that means one parse and plan per row; measured, it took 2.5× the
    driver's own time.  Here a plain psycopg cursor on the same connection and
    transaction binds server-side and prepares the statement once, and ``DEALLOCATE
    ALL`` at the end leaves no prepared statement behind for a pooled connection.
    SQLite gets Django's cursor.  The SQL is the same on both; errors still arrive as
    Django's exceptions.
    """
    if conn.vendor != "postgresql":
        with conn.cursor() as cur:
            yield cur
        return
    import psycopg

    conn.ensure_connection()
    raw = conn.connection
    threshold = raw.prepare_threshold
    with conn.wrap_database_errors:
        raw.prepare_threshold = 0
        try:
            with psycopg.Cursor(raw) as cur:
                yield cur
            if threshold is None:
                raw.execute("DEALLOCATE ALL")
        finally:
            raw.prepare_threshold = threshold


def _insert_rows(model: type[models.Model], fields: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> None:
    """One ``executemany`` INSERT; values must already be database-ready."""
    if not rows:
        return
    meta = model._meta
    conn = _db(model)
    qn = conn.ops.quote_name
    cols = ", ".join(qn(meta.get_field(f).column) for f in fields)  # type: ignore[union-attr]
    marks = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model's meta, quoted; every value is a parameter.
    sql = f"INSERT INTO {qn(meta.db_table)} ({cols}) VALUES ({marks})"  # noqa: S608
    with _bulk_cursor(conn) as cur:
        cur.executemany(sql, rows)


def _select_in(model: type[models.Model], fields: Sequence[str], key: str,
               values: Iterable[Any], *, also: tuple[str, Sequence[Any]] | None = None,
               lock: bool = False) -> list[tuple[Any, ...]]:
    """``SELECT fields WHERE key IN values [AND also[0] IN also[1]]``, as raw rows.

    Values must be database-ready; rows come back as the driver gives them (see
    :func:`_utc` for timestamps).  ``lock`` orders by primary key and locks the rows
    (``FOR UPDATE`` where the database has it; SQLite's transaction holds the
    database lock anyway), as ``select_for_update().order_by("pk")`` does.
    """
    meta = model._meta
    conn = _db(model)
    qn = conn.ops.quote_name
    values = list(values)
    if not values or (also is not None and not also[1]):
        return []
    cols = ", ".join(qn(meta.get_field(f).column) for f in fields)  # type: ignore[union-attr]
    where = f"{qn(meta.get_field(key).column)} IN ({', '.join(['%s'] * len(values))})"  # type: ignore[union-attr]
    params = values
    if also is not None:
        where += (f" AND {qn(meta.get_field(also[0]).column)} IN "  # type: ignore[union-attr]
                  f"({', '.join(['%s'] * len(also[1]))})")
        params = [*values, *also[1]]
    # Identifiers come from the model's meta, quoted; every value is a parameter.
    sql = f"SELECT {cols} FROM {qn(meta.db_table)} WHERE {where}"  # noqa: S608
    if lock:
        sql += f" ORDER BY {qn(meta.pk.column)}"
        if conn.features.has_select_for_update:
            sql += " FOR UPDATE"
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _select_pairs(model: type[models.Model], fields: tuple[str, str],
                  pairs: Iterable[tuple[Any, Any]]) -> list[tuple[Any, ...]]:
    """``SELECT a, b WHERE (a, b) IN (VALUES pairs)``, as raw rows (values database-ready).

    One index probe per pair.  ``a IN (...) AND b IN (...)`` probes every
    combination: with each device at its own time, 500 readings were 250,000
    probes (53 ms a chunk)."""
    meta = model._meta
    conn = _db(model)
    qn = conn.ops.quote_name
    params = [v for pair in pairs for v in pair]
    if not params:
        return []
    a, b = (qn(meta.get_field(f).column) for f in fields)  # type: ignore[union-attr]
    values = ", ".join(["(%s, %s)"] * (len(params) // 2))
    # Identifiers come from the model's meta, quoted; every value is a parameter.
    sql = (f"SELECT {a}, {b} FROM {qn(meta.db_table)} "  # noqa: S608
           f"WHERE ({a}, {b}) IN (VALUES {values})")
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def _utc(value: datetime | str) -> datetime:
    """A timestamp as read back raw: SQLite gives naive UTC (text or parsed), PostgreSQL
    an aware value."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"not a timestamp: {value!r}")
        value = parsed
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _insert_returning(model: type[models.Model], fields: Sequence[str],
                      rows: Sequence[Sequence[Any]], returning: Sequence[str],
                      ) -> list[tuple[Any, ...]]:
    """Multi-row INSERTs ``RETURNING`` the primary key and ``returning``.

    Values must be database-ready, in ``fields`` order.  The rows come back in no
    promised order (SQLite does not promise the order of RETURNING): the caller maps
    ids back by a unique key it asked for in ``returning``.
    """
    if not rows:
        return []
    meta = model._meta
    conn = _db(model)
    qn = conn.ops.quote_name
    cols = ", ".join(qn(meta.get_field(f).column) for f in fields)  # type: ignore[union-attr]
    back = ", ".join(qn(c) for c in (meta.pk.column, *(
        meta.get_field(f).column for f in returning)))  # type: ignore[union-attr]
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    # SQLite caps parameters per statement (Django says 999); PostgreSQL allows 65535.
    per = max(1, (conn.features.max_query_params or 6000) // len(fields))
    out: list[tuple[Any, ...]] = []
    with _bulk_cursor(conn) as cur:
        for i in range(0, len(rows), per):
            part = rows[i:i + per]
            # Identifiers come from the model's meta, quoted; every value is a parameter.
            sql = (f"INSERT INTO {qn(meta.db_table)} ({cols}) VALUES "  # noqa: S608
                   f"{', '.join([one] * len(part))} RETURNING {back}")
            cur.execute(sql, [v for row in part for v in row])
            out += cur.fetchall()
    return out


def _insert_headers(rows: list[list[Any]]) -> dict[tuple[int, datetime], int]:
    """Reading headers in, ids back by the idempotency key (device, taken_at).
    Values must be database-ready, in :data:`_HEADER_FIELDS` order."""
    return {(device_id, _utc(taken)): pk for pk, device_id, taken in _insert_returning(
        ReadingRow, _HEADER_FIELDS, rows, ("device", "taken_at"))}


def _json_db(model: type[models.Model], name: str, conn: Any, value: Any) -> Any:
    """A JSON column's value as the database takes it (text on SQLite, a Jsonb
    wrapper on PostgreSQL), exactly as the model field would send it."""
    return model._meta.get_field(name).get_db_prep_save(value, conn)  # type: ignore[union-attr]


def _preparer(f: models.Field[Any, Any], conn: Any,
              adapted: Mapping[datetime, Any] | None = None) -> Callable[[Any], Any]:
    """How one column's value is made database-ready for an UPDATE.

    ``get_db_prep_save`` runs ``to_python``/``get_prep_value`` checks per value;
    for the columns ingest updates on every device of every chunk (``last_seen``,
    ``last_reading``) that was a third of the UPDATE's time.  Aware datetimes go
    straight to the backend's adapter (what ``DateTimeField`` ends with), integer
    keys and ``None`` pass through (what ``ForeignKey`` to an integer key sends);
    anything else takes the field's own path.  ``adapted`` holds aware datetimes
    the caller already had the adapter prepare (ingest: the readings' times).
    """
    generic = functools.partial(f.get_db_prep_save, connection=conn)
    if isinstance(f, models.DateTimeField):
        adapt = conn.ops.adapt_datetimefield_value
        known = adapted or {}

        def prep_datetime(v: Any) -> Any:
            if isinstance(v, datetime) and v.tzinfo is not None:
                done = known.get(v)
                return adapt(v) if done is None else done
            return generic(v)
        return prep_datetime
    if isinstance(f, models.ForeignKey) and isinstance(f.target_field, models.IntegerField):

        def prep_key(v: Any) -> Any:
            return v if v is None or type(v) is int else generic(v)
        return prep_key
    return generic


def _update_rows(model: type[models.Model], fields: Sequence[str], objs: Iterable[Any],
                 adapted: Mapping[datetime, Any] | None = None) -> None:
    """One ``executemany`` UPDATE … WHERE pk, values prepared by each field.

    ``objs`` are model instances or anything with the fields' attribute names and
    ``pk``; ``adapted`` as for :func:`_preparer`."""
    objs = list(objs)
    if not objs:
        return
    meta = model._meta
    conn = _db(model)
    qn = conn.ops.quote_name
    fobjs = [meta.get_field(f) for f in fields]
    sets = ", ".join(f"{qn(f.column)} = %s" for f in fobjs)  # type: ignore[union-attr]
    pk_col = qn(meta.pk.column)
    sql = f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {pk_col} = %s"  # noqa: S608
    preps = [_preparer(f, conn, adapted) for f in fobjs]  # type: ignore[arg-type]
    get = operator.attrgetter(*(f.attname for f in fobjs), "pk")  # type: ignore[union-attr]
    # Each value through its column's preparer (map stops before the trailing pk).
    rows = [(*map(operator.call, preps, values), values[-1]) for values in map(get, objs)]
    with _bulk_cursor(conn) as cur:
        cur.executemany(sql, rows)


_HEADER_FIELDS = ("device", "tenant", "taken_at", "received_at", "agent_id", "snmp_version",
                  "credential", "profile", "target", "duration_ms", "identity_weak", "payload")
_DEVICE_STATE_FIELDS = (
    "tenant", "location", "identity_key", "identity_kind", "identity_weak", "manufacturer",
    "serial", "vendor", "model", "device_kind", "ip", "mac", "hostname", "firmware",
    "sys_name", "sys_location", "last_seen", "last_reading", "status", "status_changed_at",
    "device_status", "printer_status", "error_state_raw", "supplies_attention",
)
_ALERT_STATE_FIELDS = ("severity", "description", "training_level", "time_ticks",
                       "last_seen_at", "closed_at")
_COUNTER_FIELDS = ("reading", "device", "tenant", "taken_at", "name", "value", "unit",
                   "width", "delta")
_SUPPLY_FIELDS = ("reading", "device", "tenant", "taken_at", "supply_index", "supply_class",
                  "supply_type", "colour", "description", "part_number", "level_percent",
                  "state", "raw_level", "raw_max", "unit")
_SAMPLE_FIELDS = ("device", "tenant", "taken_at", "status", "device_status", "printer_status",
                  "error_state_raw", "error_flags")
_EVENT_FIELDS = ("device", "tenant", "kind", "occurred_at", "reading", "details")
_DEVICE_STATE_ATTS = tuple(Device._meta.get_field(f).attname  # type: ignore[union-attr]
                           for f in _DEVICE_STATE_FIELDS)
_device_state: Callable[[_Dev], tuple[Any, ...]] = operator.attrgetter(*_DEVICE_STATE_ATTS)
"""The values of the columns ingest may change, to write only what changed."""
if tuple(f.name for f in dataclasses.fields(_Dev))[1:-1] != _DEVICE_STATE_ATTS:  # pragma: no cover
    raise ImportError("_Dev must list the device state columns in _DEVICE_STATE_FIELDS order")
_DEV_ATTS = frozenset(f.name for f in dataclasses.fields(_Dev)) - {"pk"}
_DEVICE_TIMES = tuple(i for i, f in enumerate(_DEVICE_STATE_FIELDS, start=1)
                      if isinstance(Device._meta.get_field(f), models.DateTimeField))


def _device_from_row(row: Sequence[Any]) -> _Dev:
    """A device from a raw row of ``id`` and :data:`_DEVICE_STATE_FIELDS`: the
    timestamps made aware (UTC) as the model field would; booleans and the rest
    come from the driver as the model has them."""
    values = list(row)
    for i in _DEVICE_TIMES:
        if values[i] is not None:
            values[i] = _utc(values[i])
    return _Dev(*values)


_DEVICE_INSERT_FIELDS = tuple(f.name for f in Device._meta.concrete_fields if not f.primary_key)


def _device_rows(devices: Sequence[_Dev], conn: Any, adapted: Mapping[datetime, Any],
                 ) -> list[list[Any]]:
    """New devices' rows in :data:`_DEVICE_INSERT_FIELDS` order, database-ready: what
    ``bulk_create`` sends for ``Device`` instances with these values (columns ingest
    does not set take their defaults, ``auto_now``/``auto_now_add`` ones the time)."""
    now = timezone.now()
    columns: list[tuple[str | None, Any, Callable[[Any], Any]]] = []
    for f in Device._meta.concrete_fields:
        if f.primary_key:
            continue
        prep = _preparer(f, conn, adapted)
        if f.attname in _DEV_ATTS:
            columns.append((f.attname, None, prep))
        elif getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False):
            columns.append((None, now, prep))
        else:
            columns.append((None, f.get_default(), prep))
    return [[prep(getattr(d, att) if att is not None else fixed) for att, fixed, prep in columns]
            for d in devices]


_DEVICE_DEFAULTS: dict[str, Any] = {
    Device._meta.get_field(f).attname: Device._meta.get_field(f).get_default()  # type: ignore[union-attr]
    for f in _DEVICE_STATE_FIELDS}
"""A new device's columns before the reading sets them, as ``Device()`` has them."""
_DEVICE_TARGET = Device._meta.label_lower
"""An audit row's target type for a device (what a ``Device`` instance gives)."""


class _Chunk:
    """One transaction's worth of readings for one tenant (see the module docstring).

    Devices are tracked by Python object identity inside the chunk: a device first
    seen here has no id until the chunk's new devices are inserted together at flush.
    """

    def __init__(self, tenant: Tenant, agent_id: int | None, acting_user: Any,
                 items: Sequence[tuple[int, Reading]], payloads: _Payloads | None = None,
                 known: _WrittenCounters | None = None) -> None:
        self.tenant = tenant
        self.payloads = payloads
        self.known = known
        self.written: dict[int, _Written] = {}
        """Per device id, its last reading as this chunk wrote it."""
        self.tenant_id: int = tenant.pk
        self.agent_id = agent_id
        self.actor = SYSTEM if acting_user is None else acting_user
        self.raw_items = items
        self.now = timezone.now()
        self.conn = _db(ReadingRow)
        self.adapt = self.conn.ops.adapt_datetimefield_value
        self.received_db = self.adapt(self.now)
        self.adapted: dict[datetime, Any] = {}
        """The readings' times as the database takes them (each adapted once)."""
        self.results: dict[int, IngestResult] = {}
        self.by_key: dict[str, _Dev] = {}
        self.by_mac: dict[str, list[_Dev]] = collections.defaultdict(list)
        self.by_ip: dict[str, list[_Dev]] = collections.defaultdict(list)
        self.original: dict[int, tuple[Any, ...]] = {}
        self.new_devices: list[_Dev] = []
        self.existing_readings: set[tuple[int, datetime]] = set()
        self.seen: set[tuple[int, datetime]] = set()
        self.prev_counters: dict[int, dict[str, _Prev]] = {}
        self.open_alerts: dict[int, dict[str, AlertRecord]] = {}
        self.models: dict[tuple[str, str], DeviceModel] = {}
        self.dirty_models: dict[int, DeviceModel] = {}
        self.dirty_devices: dict[int, _Dev] = {}
        self.new_alerts: list[tuple[AlertRecord, _Dev]] = []
        self.dirty_alerts: dict[int, AlertRecord] = {}
        self.status_samples: list[tuple[_Dev, list[Any]]] = []
        self.events: list[tuple[_Pending, str, dict[str, Any], _Dev | None]] = []
        self.audits: list[tuple[str, _Dev, dict[str, Any], _Dev | None]] = []
        self.subtree_ids: set[int] | None = None
        self.dealer_path: str | None = None
        self.tenant_paths: dict[int, str] = {}

    # -- driver ------------------------------------------------------------------

    def run(self) -> list[tuple[int, IngestResult]]:
        items = self._accept()
        if items:
            self._prefetch(items)
            pending = [self._one(item) for item in items]
            self._flush([p for p in pending if p.refused is None])
            for p in pending:
                self.results[p.item.position] = self._result(p)
        return [(pos, self.results[pos]) for pos, _ in self.raw_items]

    def _accept(self) -> list[_Item]:
        items: list[_Item] = []
        latest = _latest_taken(self.now)
        for position, reading in self.raw_items:
            problems = _storage_problems(reading, latest)
            if problems:
                self.results[position] = IngestResult("rejected", error="; ".join(problems))
                continue
            try:
                ident = identify(reading, self.tenant_id)
            except NoIdentity as exc:
                self.results[position] = IngestResult("rejected", error=str(exc))
                continue
            taken = reading.taken_at.astimezone(UTC)
            taken_db = self.adapted.get(taken)
            if taken_db is None:
                taken_db = self.adapted[taken] = self.adapt(taken)
            items.append(_Item(position, reading, ident, taken, taken_db, [],
                               model_key=self._model_key(reading)))
        # Chronological, so deltas, alert lifecycles and "newest wins" are right
        # within the chunk too.
        items.sort(key=lambda it: it.taken)
        return items

    def _result(self, p: _Pending) -> IngestResult:
        weak = p.item.ident.weak or p.item.matched_weak
        if p.refused is not None:
            return IngestResult("rejected", device_id=p.device.pk, error=p.refused,
                                code=FOREIGN_DEVICE)
        if p.duplicate:
            return IngestResult("duplicate", device_id=p.device.pk, identity_weak=weak)
        return IngestResult("stored", device_id=p.device.pk, reading_id=p.reading_id,
                            device_created=p.created, identity_weak=weak,
                            events=tuple(p.events), warnings=tuple(p.item.warnings))

    # -- loading ------------------------------------------------------------------

    def _remember(self, d: _Dev) -> None:
        if d.pk is not None:
            self.original[d.pk] = _device_state(d)
        self.by_key[d.identity_key] = d
        if d.tenant_id == self.tenant_id:
            if d.mac:
                self.by_mac[d.mac].append(d)
            if d.ip:
                self.by_ip[d.ip.lower()].append(d)

    def _prefetch(self, items: list[_Item]) -> None:
        # The chunk's devices, readings and previous counters are hundreds to
        # thousands of rows, looked up by as many keys: read with the cursor, not
        # through the ORM's per-value lookup preparation and per-row iterator.
        keys = {it.ident.key for it in items}
        for row in _select_in(Device, ("id", *_DEVICE_STATE_FIELDS), "identity_key", keys,
                              lock=True):
            self._remember(_device_from_row(row))
        unresolved = [it for it in items if it.ident.key not in self.by_key]
        macs = {it.ident.mac for it in unresolved if it.ident.mac}
        addrs = {it.ident.address for it in unresolved if it.ident.address}
        if macs or addrs:
            q = Q(mac__in=macs) | Q(ip__in=addrs)
            for row in (Device.objects.select_for_update().filter(tenant=self.tenant).filter(q)
                        .exclude(identity_key__in=keys).order_by("pk")
                        .values_list("pk", *_DEVICE_STATE_ATTS)):
                self._remember(_Dev(*row))
        devices = {d.pk: d for d in self.by_key.values()}
        self._prefetch_models(items)
        if not devices:
            return
        ids = list(devices)
        self.existing_readings = {
            (id(devices[dev_id]), _utc(taken)) for dev_id, taken in
            _select_pairs(ReadingRow, ("device", "taken_at"),
                          self._possible_readings(items, unresolved))}
        prev = self.prev_counters
        last_ids = []
        known = self.known
        for d in devices.values():
            if d.last_reading_id:
                counters = None if known is None else known.get(
                    d.pk, d.last_reading_id, d.last_seen)
                if counters is None:
                    last_ids.append(d.last_reading_id)
                else:
                    prev[id(d)] = dict(counters)  # _counters changes its own copy
        if last_ids:
            for dev_id, name, value, unit, width in _select_in(
                    CounterValue, ("device", "name", "value", "unit", "width"), "reading",
                    last_ids):
                prev.setdefault(id(devices[dev_id]), {})[name] = (value, unit, width)
        for rec in AlertRecord.objects.filter(device_id__in=ids, closed_at__isnull=True):
            self.open_alerts.setdefault(id(devices[rec.device_id]), {})[rec.key] = rec

    def _possible_readings(self, items: list[_Item], unresolved: list[_Item],
                           ) -> set[tuple[Any, Any]]:
        """(device id, time) of every stored reading the chunk could repeat: each item
        with the device of its key; an item without one with every device it may still
        be matched to (this tenant's devices at its MAC or address, few)."""
        pairs = set()
        by_key = self.by_key
        for it in items:
            d = by_key.get(it.ident.key)
            if d is not None and d.pk is not None:
                pairs.add((d.pk, it.taken_db))
        for it in unresolved:  # as _candidate looks them up
            ident = it.ident
            near = [*self.by_mac.get(ident.mac or "", ()),
                    *self.by_ip.get((ident.address or "").lower(), ())]
            pairs.update((d.pk, it.taken_db) for d in near if d.pk is not None)
        return pairs

    def _prefetch_models(self, items: list[_Item]) -> None:
        pairs = {k for it in items if (k := it.model_key) is not None}
        if not pairs:
            return
        for m in DeviceModel.objects.filter(manufacturer_key__in={p[0] for p in pairs},
                                            name_key__in={p[1] for p in pairs}):
            self.models[(m.manufacturer_key, m.name_key)] = m

    @staticmethod
    def _model_key(r: Reading) -> tuple[str, str] | None:
        ident = r.identity
        return _model_key_of(ident.manufacturer or ident.vendor, ident.model)

    # -- one reading ----------------------------------------------------------------

    def _one(self, item: _Item) -> _Pending:
        device, created, events = self._resolve(item)
        p = _Pending(item, device, created)
        if not created and not self._may_take(device):
            p.refused = (f"device {device.manufacturer} {device.serial} is registered with "
                         "another dealer; not moved (the platform operator can move it, then "
                         "reprocess this batch)")
            self._audit("device.claim_refused", device, item, from_tenant_id=device.tenant_id)
            return p
        key = (id(device), item.taken)
        if key in self.existing_readings or key in self.seen:
            p.duplicate = True
            return p
        self.seen.add(key)
        r = item.reading
        in_order = created or item.taken > device.last_seen
        for kind, details, other in events:
            self._event(p, kind, details, other=other)
        if in_order:
            self._move_if_needed(p)
        p.header_row = [
            None, self.tenant_id, item.taken_db, self.received_db, self.agent_id,
            r.snmp_version, r.credential or "", r.profile.name if r.profile else "", r.target,
            r.duration_ms, item.ident.weak or item.matched_weak, None]  # payload at flush
        self._counters(p, in_order)
        self._supplies(p)
        if in_order:
            self._current_state(p)
            self._alerts(p)
        return p

    def _event(self, p: _Pending, kind: EventKind, details: EventDetails, *,
               other: _Dev | None = None) -> None:
        """A device event; ``other`` (the replaced device) gets its id into the details
        at flush, as it may be new in this chunk."""
        self.events.append((p, str(kind), details.as_json(), other))
        p.events.append(str(kind))

    def _audit(self, action: str, device: _Dev, item: _Item, *,
               from_tenant_id: int | None = None, other: _Dev | None = None) -> None:
        """An audit row, its data taken now (ids are filled in at flush)."""
        self.audits.append((action, device, {
            "identity_key": device.identity_key, "identity_kind": str(device.identity_kind),
            "serial": device.serial, "manufacturer": device.manufacturer,
            "mac": item.ident.mac or "", "ip": item.ident.address or "",
            "from_tenant_id": from_tenant_id, "agent_id": self.agent_id,
            "taken_at": item.taken.isoformat()}, other))

    def _candidate(self, ident: DeviceIdentity) -> tuple[_Dev, Literal["mac", "address"]] | None:
        """The device this tenant has now at the reading's MAC, else at its address.

        The MAC is the better witness: the address is used only when the MAC cannot
        testify (the reading or the candidate has none).  Among several, the most
        recently seen wins.
        """
        tid = self.tenant_id
        if ident.mac:
            found = [d for d in self.by_mac.get(ident.mac, ()) if d.mac == ident.mac
                     and d.tenant_id == tid]
            if found:
                return max(found, key=lambda d: d.last_seen), "mac"
        if ident.address:
            addr = ident.address.lower()
            found = [d for d in self.by_ip.get(addr, ()) if d.ip.lower() == addr
                     and d.tenant_id == tid and (not ident.mac or not d.mac)]
            if found:
                return max(found, key=lambda d: d.last_seen), "address"
        return None

    def _resolve(self, item: _Item) -> tuple[_Dev, bool, list[_NewEvent]]:
        """The reading's device, whether this reading created it, and identity events."""
        ident = item.ident
        device = self.by_key.get(ident.key)
        if device is not None:
            return device, False, []
        found = self._candidate(ident)
        created: _NewEvent = (EventKind.CREATED, EventDetails(identity_kind=str(ident.kind)),
                              None)
        if ident.kind != IdentityKind.SERIAL:
            if found is not None:
                item.matched_weak = True
                return found[0], False, []
            return self._create(item), True, [created]
        if found is not None:
            cand, matched_on = found
            if cand.identity_weak:
                return self._upgrade(cand, item, matched_on)
            if serial_key(cand.serial) == serial_key(ident.serial):
                # Same serial at the same MAC/address, manufacturer spelt differently
                # by another profile: the same device, not a new one.
                return cand, False, []
        device = self._create(item)
        events = [created]
        if found is not None:
            cand, matched_on = found
            events.append((EventKind.SERIAL_CHANGED, EventDetails(
                old=cand.serial, new=ident.serial, matched_on=matched_on), cand))
            self._audit("device.serial_changed", device, item, other=cand)
        return device, True, events

    def _create(self, item: _Item) -> _Dev:
        """A new device, inserted with the chunk's other new devices at flush (the
        other columns as the model's defaults have them)."""
        ident = item.ident
        device = _Dev(None, **{
            **_DEVICE_DEFAULTS, "tenant_id": self.tenant_id, "identity_key": ident.key,
            "identity_kind": ident.kind, "identity_weak": ident.weak,
            "manufacturer": ident.manufacturer, "serial": ident.serial,
            "mac": ident.mac or "", "ip": ident.address or "", "last_seen": item.taken},
            first_seen=item.taken)
        self.new_devices.append(device)
        self._remember(device)
        return device

    def _upgrade(self, device: _Dev, item: _Item, matched_on: Literal["mac", "address"],
                 ) -> tuple[_Dev, bool, list[_NewEvent]]:
        """A weak device told us its serial: it becomes strongly identified."""
        ident = item.ident
        old_key = device.identity_key
        device.identity_key = ident.key
        device.identity_kind = ident.kind
        device.identity_weak = False
        device.serial = ident.serial
        device.manufacturer = ident.manufacturer
        self.by_key.pop(old_key, None)
        self.by_key[ident.key] = device
        self._dirty(device)
        self._audit("device.identity_upgraded", device, item)
        return device, False, [(EventKind.IDENTITY_UPGRADED, EventDetails(
            old=old_key, new=ident.key, matched_on=matched_on), None)]

    def _dirty(self, device: _Dev) -> None:
        if device.pk is not None:
            self.dirty_devices[device.pk] = device

    def _reporting_subtree(self) -> set[int]:
        """Ids of the reporting tenant and every node below it (read once, when a
        device from elsewhere turns up)."""
        if self.subtree_ids is None:
            self.subtree_ids = set(Tenant.objects.filter(path__startswith=self.tenant.path)
                                   .values_list("pk", flat=True))
        return self.subtree_ids

    def _may_take(self, device: _Dev) -> bool:
        """Whether this tenant's reading may be filed on ``device`` (and move it here).

        Identity is global, so a strongly identified device can turn up in another
        tenant's reading.  Within one dealer that is a resale or a relocation the
        dealer arranged, and the device follows the report.  Across dealers it is
        either a device that changed dealers — which the operator confirms by moving
        it — or an agent claiming a serial it read off someone else's label: one
        dealer's agent must never take another dealer's device, its readings and its
        place in their contracts.  So the reading is refused (its raw batch stays for
        reprocessing) and the claim is audited.
        """
        tid = device.tenant_id
        if tid == self.tenant_id or device.identity_weak:
            return True
        if self.dealer_path is None:
            ancestors = self.tenant.ancestor_ids
            dealer = (Tenant.objects.filter(pk__in=ancestors, kind=TenantKind.DEALER)
                      .values_list("path", flat=True).first())
            # No dealer above (not a shape the tree allows): only the own subtree.
            self.dealer_path = dealer or self.tenant.path
        path = self.tenant_paths.get(tid)
        if path is None:
            path = self.tenant_paths[tid] = (
                Tenant.objects.filter(pk=tid).values_list("path", flat=True).first() or "")
        return path.startswith(self.dealer_path)

    def _move_if_needed(self, p: _Pending) -> None:
        """A strongly identified device reported by another tenant of the same dealer
        has been moved (resold, relocated): it follows, its location (a place in the
        old site) is cleared, and its history stays with the tenant that recorded it.
        (Another dealer's device never gets here: :meth:`_may_take`.)

        A device that a person put at one of the reporting tenant's own sites (a
        customer-wide agent reads the devices of all its sites) stays there."""
        device = p.device
        if device.tenant_id == self.tenant_id or device.identity_weak:
            return
        if device.tenant_id in self._reporting_subtree():
            # Placed by a person at a site of the customer whose agent read it: it
            # already is where this tenant's readings belong.
            return
        old = device.tenant_id
        device.tenant_id = self.tenant_id
        device.location_id = None
        self._dirty(device)
        self._event(p, EventKind.MOVED, EventDetails(from_tenant_id=old,
                                                     to_tenant_id=self.tenant_id))
        self._audit("device.moved", device, p.item, from_tenant_id=old)

    def _counters(self, p: _Pending, in_order: bool) -> None:
        item = p.item
        prev = self.prev_counters.setdefault(id(p.device), {}) if in_order else None
        taken_db, tenant_id = item.taken_db, self.tenant_id
        rows = p.counter_rows
        names: set[str] = set()
        for i, c in enumerate(item.reading.counters):
            name, value, unit, width = c.name, c.value, c.unit, c.width
            if name in names:
                item.warnings.append(f"counters.{i}: second counter named {name!r} ignored")
                continue
            names.add(name)
            if value > INT64_MAX:
                _int64(value, f"counters.{i}.value", item.warnings)
                continue
            delta = None
            if prev is not None:
                old = prev.get(name)
                if old is not None and old[1] == unit:
                    old_value = old[0]
                    if value >= old_value:  # counter_delta's common case, inlined
                        delta = value - old_value
                    else:
                        w = width or old[2]
                        delta = counter_delta(old_value, value, w)
                        if delta is None:
                            self._event(p, EventKind.COUNTER_RESET, EventDetails(
                                counter=name, old_value=old_value, new_value=value, width=w))
                        else:
                            self._event(p, EventKind.COUNTER_WRAPPED, EventDetails(
                                counter=name, old_value=old_value, new_value=value,
                                delta=delta, width=w))
                prev[name] = (value, unit, width)
            rows.append([None, None, tenant_id, taken_db, name, value, unit, width, delta])

    def _supplies(self, p: _Pending) -> None:
        item = p.item
        taken_db, tenant_id, w = item.taken_db, self.tenant_id, item.warnings
        rows = p.supply_rows
        for i, s in enumerate(item.reading.supplies):
            level, maximum = s.raw_level, s.raw_max
            if level is not None and not -INT64_MAX <= level <= INT64_MAX:
                level = _int64(level, f"supplies.{i}.raw_level", w)
            if maximum is not None and not -INT64_MAX <= maximum <= INT64_MAX:
                maximum = _int64(maximum, f"supplies.{i}.raw_max", w)
            rows.append([None, None, tenant_id, taken_db, str(s.index), s.class_, s.type,
                         s.colour or "", s.description or "", s.part_number or "",
                         s.level_percent, str(s.state), level, maximum, s.unit or ""])

    def _model_for(self, r: Reading, key: tuple[str, str] | None) -> DeviceModel | None:
        if key is None:
            return None
        model = self.models.get(key)
        if model is None:
            model, _ = DeviceModel.objects.get_or_create(
                manufacturer_key=key[0], name_key=key[1],
                defaults={"manufacturer": (r.identity.manufacturer or r.identity.vendor or ""
                                           ).strip(),
                          "name": (r.identity.model or "").strip()})
            self.models[key] = model
        caps = r.capabilities
        changed = False
        if model.is_colour is None and caps.colour is not None:
            model.is_colour, changed = caps.colour, True
        if model.has_duplex is None and caps.duplex is not None:
            model.has_duplex, changed = caps.duplex, True
        if not model.marker_technology and caps.marker_technology:
            model.marker_technology, changed = caps.marker_technology, True
        if not model.colorants and caps.colorants:
            model.colorants, changed = STRING_LIST.validate_python(caps.colorants), True
        if model.device_kind == "unknown" and r.identity.device_kind != "unknown":
            model.device_kind, changed = r.identity.device_kind, True
        if changed:
            self.dirty_models[model.pk] = model
        return model

    def _current_state(self, p: _Pending) -> None:
        """Newest reading: last-known attributes, status, last_seen."""
        d, item = p.device, p.item
        r = item.reading
        ident = r.identity
        updates: dict[str, Any] = {
            "ip": item.ident.address, "mac": item.ident.mac, "hostname": ident.hostname,
            "vendor": ident.vendor, "sys_name": ident.sys_name,
            "sys_location": ident.sys_location,
        }
        if item.ident.serial and d.identity_weak:
            updates["serial"] = item.ident.serial
        if ident.device_kind != "unknown":
            updates["device_kind"] = ident.device_kind
        for name, value in updates.items():
            if value and getattr(d, name) != value:
                setattr(d, name, value)
        if ident.firmware and ident.firmware != d.firmware:
            if d.firmware:
                self._event(p, EventKind.FIRMWARE_CHANGED, EventDetails(
                    old=d.firmware, new=ident.firmware))
            d.firmware = ident.firmware
        model = self._model_for(r, item.model_key)
        if model is not None and d.model_id != model.pk:
            d.model_id = model.pk
        status = status_summary(r)
        st = r.status
        snapshot = (str(status), st.device_status or "", st.printer_status or "",
                    st.error_state_raw or "")
        if snapshot != (d.status, d.device_status, d.printer_status, d.error_state_raw):
            if d.status != status:
                d.status_changed_at = item.taken
            d.status, d.device_status, d.printer_status, d.error_state_raw = snapshot
            # A row in _SAMPLE_FIELDS order; the device id is set at flush.
            self.status_samples.append((d, [
                None, self.tenant_id, item.taken_db, *snapshot,
                _json_db(StatusSample, "error_flags", self.conn,
                         STRING_LIST.validate_python(st.error_flags))]))
        attention = sum(1 for s in r.supplies if s.state in SUPPLY_ATTENTION_STATES)
        if d.supplies_attention != attention:
            d.supplies_attention = attention
        p.previous_seen = d.last_seen
        d.last_seen = item.taken
        self._dirty(d)

    def _alerts(self, p: _Pending) -> None:
        """Open what is new, close what a complete reading no longer lists."""
        d, r, taken = p.device, p.item.reading, p.item.taken
        previous_seen = p.previous_seen or taken
        open_ = self.open_alerts.setdefault(id(d), {})
        if not r.alerts and not open_:
            return
        w = p.item.warnings
        present: set[str] = set()
        for i, a in enumerate(r.alerts):
            key = alert_key(a)
            if key in present:
                continue
            present.add(key)
            rec = open_.get(key)
            if rec is None:
                rec = AlertRecord(
                    tenant=self.tenant, key=key, source=a.source,
                    severity=a.severity, code=a.code,
                    alert_index=_int64(a.index, f"alerts.{i}.index", w),
                    group=a.group or "",
                    group_index=_int64(a.group_index, f"alerts.{i}.group_index", w),
                    location=_int64(a.location, f"alerts.{i}.location", w),
                    training_level=a.training_level or "", description=a.description or "",
                    time_ticks=_int64(a.time_ticks, f"alerts.{i}.time_ticks", w),
                    opened_at=taken, last_seen_at=taken)
                open_[key] = rec
                self.new_alerts.append((rec, d))  # the device's id is set at flush
                continue
            rec.last_seen_at = taken
            if (rec.severity, rec.description) != (a.severity, a.description or ""):
                rec.severity, rec.description = a.severity, a.description or ""
                if rec.pk is not None:
                    self.dirty_alerts[rec.pk] = rec
            # An unchanged open alert is not rewritten every reading: its last_seen_at
            # in the database is refreshed when it changes or closes.
        complete = complete_alert_sources(r)
        for key, rec in list(open_.items()):
            if key in present or rec.source not in complete:
                continue
            rec.closed_at = taken
            if rec.pk is not None:
                rec.last_seen_at = max(rec.last_seen_at, previous_seen)
                self.dirty_alerts[rec.pk] = rec
            del open_[key]

    # -- writing ----------------------------------------------------------------------

    def _flush(self, pending: list[_Pending]) -> None:
        if self.new_devices:
            # The chunk's new devices in as rows, ids back by their identity key;
            # their last reading is set below with the other devices' update.
            ids = {key: pk for pk, key in _insert_returning(
                Device, _DEVICE_INSERT_FIELDS,
                _device_rows(self.new_devices, self.conn, self.adapted),
                ("identity_key",))}
            for d in self.new_devices:
                d.pk = ids[d.identity_key]
                self.original[d.pk] = _device_state(d)
                self.dirty_devices[d.pk] = d
        stored = [p for p in pending if not p.duplicate]
        if self.payloads is not None:  # encoded by the worker, in raw_items order
            encoded = dict(zip([pos for pos, _ in self.raw_items], self.payloads.result(),
                               strict=True))
            for p in stored:
                p.header_row[0] = p.device.pk
                p.header_row[-1] = encoded[p.item.position]
        else:
            for p in stored:
                p.header_row[0] = p.device.pk
                p.header_row[-1] = compress_payload(p.item.reading)
        ids = _insert_headers([p.header_row for p in stored])
        counter_rows: list[list[Any]] = []
        supply_rows: list[list[Any]] = []
        for p in stored:
            d = p.device
            dev_id = d.pk
            rid = p.reading_id = ids[(dev_id, p.item.taken)]
            for row in p.counter_rows:
                row[0], row[1] = rid, dev_id
            for row in p.supply_rows:
                row[0], row[1] = rid, dev_id
            counter_rows += p.counter_rows
            supply_rows += p.supply_rows
            if d.last_seen == p.item.taken:
                d.last_reading_id = rid
                self.written[dev_id] = (rid, d.last_seen, {
                    row[4]: (row[5], row[6], row[7]) for row in p.counter_rows})
        _insert_rows(CounterValue, _COUNTER_FIELDS, counter_rows)
        _insert_rows(SupplyLevel, _SUPPLY_FIELDS, supply_rows)
        _update_rows(AlertRecord, _ALERT_STATE_FIELDS, self.dirty_alerts.values())
        # Alerts of a device that was new in this chunk take its id only now.
        for rec, d in self.new_alerts:
            rec.device_id = d.pk
        AlertRecord.objects.bulk_create([rec for rec, _ in self.new_alerts])
        # Status samples and events are plain rows, not model instances: a chunk has
        # thousands, and bulk_create's per-object work cost more than their INSERT.
        sample_rows = []
        for d, row in self.status_samples:
            row[0] = d.pk
            sample_rows.append(row)
        _insert_rows(StatusSample, _SAMPLE_FIELDS, sample_rows)
        event_rows = []
        for p, kind, details, other in self.events:
            data = details if other is None else EventDetails(
                **details, other_device_id=other.pk).as_json()
            event_rows.append((p.device.pk, self.tenant_id, kind, p.item.taken_db,
                               p.reading_id, _json_db(DeviceEvent, "details", self.conn, data)))
        _insert_rows(DeviceEvent, _EVENT_FIELDS, event_rows)
        for m in self.dirty_models.values():
            m.save(update_fields=["is_colour", "has_duplex", "marker_technology", "colorants",
                                  "device_kind"])
        # Only the columns that changed, grouped: the usual case is last_seen and
        # last_reading alone.
        groups: dict[tuple[str, ...], list[_Dev]] = collections.defaultdict(list)
        for d in self.dirty_devices.values():
            changed = tuple(itertools.compress(
                _DEVICE_STATE_FIELDS, map(operator.ne, self.original[d.pk], _device_state(d))))
            if changed:
                groups[changed].append(d)
        for fields, devices in groups.items():
            _update_rows(Device, fields, devices, self.adapted)
        if self.new_devices:
            # One row for the devices this batch discovered (an agent's first upload
            # can bring hundreds; a hash-chained row each would dominate the import).
            audit.record("device.discovered", tenant=self.tenant, actor=self.actor,
                         target=self.tenant, data=DevicesDiscovered(
                             agent_id=self.agent_id, count=len(self.new_devices),
                             devices=[DiscoveredDevice(id=d.pk, identity_key=d.identity_key)
                                      for d in self.new_devices]))
        for action, device, data, other in self.audits:
            audit.record(action, tenant=self.tenant, actor=self.actor,
                         target=(_DEVICE_TARGET, device.pk),
                         data=DeviceAudit(**data, other_device_id=other.pk if other else None))


# --- retention tiers ------------------------------------------------------------------


@dataclass
class MaintenanceReport:
    """What one :func:`do_rollup_and_prune` run did."""

    days_rolled: list[date] = field(default_factory=list)
    rollup_rows: int = 0
    readings_pruned: int = 0
    batches: int = 0
    finished: bool = True
    """False when the batch budget ran out; the next run continues."""


ROLLUP_CURSOR = "counters"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _rollup_devices(day: date, device_ids: list[int]) -> int:
    """Recompute the CounterDaily rows of ``device_ids`` for ``day`` (idempotent)."""
    start, end = _day_bounds(day)
    reading_ids = list(ReadingRow.objects.filter(device_id__in=device_ids, taken_at__gte=start,
                                                 taken_at__lt=end).values_list("id", flat=True))
    rows = (CounterValue.objects.filter(reading_id__in=reading_ids)
            .order_by("device_id", "name", "taken_at")
            .values_list("device_id", "tenant_id", "name", "taken_at", "value", "unit", "delta"))
    out: list[CounterDaily] = []
    current: CounterDaily | None = None
    for dev_id, tenant_id, name, taken_at, value, unit, delta in rows.iterator(chunk_size=5000):
        if current is None or (current.device_id, current.name) != (dev_id, name):
            current = CounterDaily(device_id=dev_id, tenant_id=tenant_id, name=name, day=day,
                                   unit=unit, first_value=value, first_at=taken_at,
                                   last_value=value, last_at=taken_at, usage=0, samples=0,
                                   samples_without_delta=0)
            out.append(current)
        current.last_value, current.last_at, current.tenant_id = value, taken_at, tenant_id
        current.samples += 1
        if delta is None:
            current.samples_without_delta += 1
        else:
            current.usage += delta
    CounterDaily.objects.filter(device_id__in=device_ids, day=day).delete()
    CounterDaily.objects.bulk_create(out, batch_size=1000)
    return len(out)


def _chunks(seq: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def do_rollup_and_prune(*, now: datetime | None = None, retention_days: int | None = None,
                        lookback_days: int = 2, device_batch: int = 500,
                        prune_batch: int = 2000, max_batches: int = 200) -> MaintenanceReport:
    """Roll complete UTC days up into :class:`CounterDaily`, then delete raw readings
    older than the retention — in bounded batches, each its own transaction.

    Safe to run any time and repeatedly: a day's rollup is recomputed from the raw
    rows (``lookback_days`` recent days again each run, to absorb late readings),
    pruning never passes the rollup cursor, and a device's newest reading is kept
    whatever its age (dashboards need it).  With the budget spent, it stops with
    ``finished=False`` and the next run continues.
    """
    now = now or timezone.now()
    retention = conf.raw_retention_days() if retention_days is None else retention_days
    report = MaintenanceReport()
    today = now.astimezone(UTC).date()
    cursor, _ = RollupCursor.objects.get_or_create(name=ROLLUP_CURSOR)
    if cursor.rolled_through is None:
        first = ReadingRow.objects.order_by("taken_at").values_list("taken_at", flat=True)[:1]
        day = first[0].astimezone(UTC).date() if first else today
    else:
        next_day = cursor.rolled_through + timedelta(days=1)
        # Recompute a few recent days for late readings, but never a day whose raw
        # rows pruning may already have thinned (days not yet rolled are never pruned).
        safe = (now - timedelta(days=retention)).astimezone(UTC).date() + timedelta(days=1)
        day = min(next_day, max(next_day - timedelta(days=lookback_days), safe))
    while day < today:
        start, end = _day_bounds(day)
        devices = sorted(set(ReadingRow.objects.filter(taken_at__gte=start, taken_at__lt=end)
                             .values_list("device_id", flat=True)))
        for chunk in _chunks(devices, device_batch):
            if report.batches >= max_batches:
                report.finished = False
                return report
            with transaction.atomic():
                report.rollup_rows += _rollup_devices(day, chunk)
            report.batches += 1
        report.days_rolled.append(day)
        if cursor.rolled_through is None or day > cursor.rolled_through:
            cursor.rolled_through = day
            cursor.save(update_fields=["rolled_through", "updated_at"])
        day += timedelta(days=1)
    if cursor.rolled_through is None:
        return report
    rolled_end = _day_bounds(cursor.rolled_through)[1]
    cutoff = min(now - timedelta(days=retention), rolled_end)
    keep = Device.objects.filter(last_reading__isnull=False).values("last_reading_id")
    while True:
        if report.batches >= max_batches:
            report.finished = False
            return report
        with transaction.atomic():
            ids = list(ReadingRow.objects.filter(taken_at__lt=cutoff).exclude(id__in=keep)
                       .order_by("taken_at").values_list("id", flat=True)[:prune_batch])
            if not ids:
                break
            # Children first, by the reading_id index, so the collector finds nothing
            # left to cascade row by row.
            CounterValue.objects.filter(reading_id__in=ids).delete()
            SupplyLevel.objects.filter(reading_id__in=ids).delete()
            ReadingRow.objects.filter(id__in=ids).delete()
        report.readings_pruned += len(ids)
        report.batches += 1
    return report


def do_mark_not_reporting(*, now: datetime | None = None) -> int:
    """Mark devices silent for longer than the threshold ``not_reporting``; log the change.

    The next reading computes the status afresh, so nothing needs undoing.
    """
    now = now or timezone.now()
    threshold = now - timedelta(hours=conf.not_reporting_after_hours())
    with transaction.atomic():
        stale = list(Device.objects.select_for_update().filter(last_seen__lt=threshold)
                     .exclude(status=DeviceStatus.NOT_REPORTING).order_by("pk"))
        if not stale:
            return 0
        StatusSample.objects.bulk_create([
            StatusSample(device=d, tenant_id=d.tenant_id, taken_at=now,
                         status=DeviceStatus.NOT_REPORTING, device_status=d.device_status,
                         printer_status=d.printer_status, error_state_raw=d.error_state_raw,
                         error_flags=[])
            for d in stale])
        Device.objects.filter(pk__in=[d.pk for d in stale]).update(
            status=DeviceStatus.NOT_REPORTING, status_changed_at=now)
    return len(stale)


# --- what people maintain about a device ----------------------------------------------

MAX_TAGS = 20
EDITABLE_TENANT_KINDS = frozenset({TenantKind.SITE, TenantKind.CUSTOMER})


def clean_tag_names(names: Iterable[str]) -> list[str]:
    """Trimmed, inner whitespace collapsed, case-insensitively unique, in input order.

    Raises :class:`~django.core.exceptions.ValidationError` for a name longer than the
    column or more than :data:`MAX_TAGS` names (never truncated: two long names would
    silently become one).
    """
    limit = _limit(Tag, "name")
    out: list[str] = []
    seen: set[str] = set()
    for raw in names:
        name = " ".join(raw.split())
        if not name or name.casefold() in seen:
            continue
        if len(name) > limit:
            raise ValidationError(_("A tag may have at most %(limit)d characters."),
                                  code="tag_too_long", params={"limit": limit})
        seen.add(name.casefold())
        out.append(name)
    if len(out) > MAX_TAGS:
        raise ValidationError(_("A device may have at most %(limit)d tags."),
                              code="too_many_tags", params={"limit": MAX_TAGS})
    return out


def _label(t: Tenant | None) -> str | None:
    return None if t is None else f"{t.name} (#{t.pk})"


def do_update_device(device: Device, *, acting_user: Any, tenant: Tenant,
                     location: Tenant | None, tags: Iterable[str], asset_number: str,
                     cost_centre: str, request: HttpRequest | None = None) -> Device:
    """Change what people maintain about a device: its site, location, tags, asset
    number and cost centre (never what the device reports about itself).

    Needs ``edit_devices`` on the device's tenant and on ``tenant`` (a site, or a
    customer without sites).  ``location`` must lie inside ``tenant``.  Tags are the
    labels of the device's own tenant: they are replaced by ``tags``, re-created in
    the new tenant on a move; another tenant's labels on the device are left alone.
    One transaction: the device, a ``moved`` event when the tenant changes, and one
    ``device.updated`` audit row listing every changed field (nothing when nothing
    changed).  A later reading from an agent of another site of the same dealer moves
    the device back (the reporting tenant wins, see ingest); an agent of its customer
    does not, nor does another dealer's agent (its reading is refused).
    """
    if tenant.kind not in EDITABLE_TENANT_KINDS:
        raise ValidationError(_("A device belongs to a site or a customer."), code="kind")
    if location is not None and (location.kind != TenantKind.LOCATION
                                 or not location.path.startswith(tenant.path)):
        raise ValidationError(_("The location must lie inside the device's site."),
                              code="location")
    names = clean_tag_names(tags)
    asset_number, cost_centre = asset_number.strip(), cost_centre.strip()
    for field_name, value in (("asset_number", asset_number), ("cost_centre", cost_centre)):
        if len(value) > _limit(Device, field_name):
            raise ValidationError(_("This value is too long."), code="too_long")
    require_permission(acting_user, Permission.EDIT_DEVICES, tenant)
    if location is not None:
        require_permission(acting_user, Permission.EDIT_DEVICES, location)
    with transaction.atomic():
        # Locked without joins: PostgreSQL cannot lock the nullable side of the
        # outer join to the location.
        d = Device.objects.select_for_update().get(pk=device.pk)
        # Checked on the row as locked: ingest may have moved it since the form loaded.
        require_permission(acting_user, Permission.EDIT_DEVICES, d.tenant)
        old_tenant, old_location = d.tenant, d.location
        own_tags = list(Tag.objects.filter(tenant=old_tenant, devices=d).order_by("name"))
        changes: dict[str, FieldChange] = {}
        if tenant.pk != old_tenant.pk:
            changes["tenant"] = FieldChange(old=_label(old_tenant), new=_label(tenant))
        if (location.pk if location else None) != d.location_id:
            changes["location"] = FieldChange(old=_label(old_location), new=_label(location))
        for field_name, value in (("asset_number", asset_number),
                                  ("cost_centre", cost_centre)):
            if getattr(d, field_name) != value:
                changes[field_name] = FieldChange(old=getattr(d, field_name) or None,
                                                  new=value or None)
        old_names = [t.name for t in own_tags]
        # Tags match case-insensitively (see _tag), so "colour" for "Colour" is no change.
        if "tenant" in changes or sorted(n.casefold() for n in old_names) != sorted(
                n.casefold() for n in names):
            changes["tags"] = FieldChange(old=", ".join(old_names) or None,
                                          new=", ".join(names) or None)
        if not changes:
            return d
        d.tenant, d.location = tenant, location
        d.asset_number, d.cost_centre = asset_number, cost_centre
        d.save(update_fields=["tenant", "location", "asset_number", "cost_centre"])
        if "tags" in changes:
            d.tags.remove(*own_tags)
            d.tags.add(*(_tag(tenant, name) for name in names))
        if "tenant" in changes:
            DeviceEvent.objects.create(
                device=d, tenant=tenant, kind=EventKind.MOVED, occurred_at=timezone.now(),
                details=EventDetails(from_tenant_id=old_tenant.pk,
                                     to_tenant_id=tenant.pk).as_json())
        audit.record("device.updated", tenant=tenant, actor=acting_user, target=d,
                     request=request,
                     data=DeviceUpdated(identity_key=d.identity_key, changes=changes))
    return d


def _tag(tenant: Tenant, name: str) -> Tag:
    """The tenant's tag of that name (matched case-insensitively), created if new."""
    found = Tag.objects.filter(tenant=tenant, name__iexact=name).order_by("pk").first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return Tag.objects.create(tenant=tenant, name=name)
    except IntegrityError:  # created concurrently under the same spelling
        return Tag.objects.get(tenant=tenant, name=name)


def export_chains(user: Any, within: Tenant | None) -> list[Tenant]:
    """The tenants whose audit chains an export by ``user`` is written to: one per
    subtree the user may export from (their ``export_data`` memberships), narrowed to
    ``within`` when the export is filtered to a customer or site."""
    prefixes = scope(user, Permission.EXPORT_DATA).prefixes
    roots = sorted(Tenant.objects.filter(path__in=prefixes), key=lambda t: t.path)
    out: dict[int, Tenant] = {}
    for root in roots:
        if within is None or root.path.startswith(within.path):
            out[root.pk] = root
        elif within.path.startswith(root.path):
            out[within.pk] = within
    return list(out.values())


def do_audit_export(user: Any, devices: models.QuerySet[Device], *, chains: list[Tenant],
                    filters: ExportFilters, request: HttpRequest | None = None) -> int:
    """Write the ``device.exported`` audit rows of an export *before* it is sent.

    ``devices`` is the export's (scoped, filtered) queryset, ``chains`` what
    :func:`export_chains` gave for it.  One row per chain, counting that subtree's
    devices, so each tenant's log says how many of its devices left.  Returns the
    total.  Every row is its own transaction (the audit log asks for one chain per
    transaction).
    """
    total = 0
    for chain in chains:
        rows = devices.filter(tenant__path__startswith=chain.path).order_by().count()
        total += rows
        with transaction.atomic():
            audit.record("device.exported", tenant=chain, actor=user, target=chain,
                         request=request,
                         data=DevicesExported(format="csv", rows=rows, filters=filters))
    return total

"""Fleet web UI at scale: dashboard and device list p95 at 10,000 devices and 1,000,000
readings (goal: p95 < 300 ms).

Usage::

    uv run --locked python -m bench.server_ui                      # SQLite, throw-away dir
    uv run --locked python -m bench.server_ui --requests 100 --json
    uv run --locked python -m bench.server_ui --data-dir /tmp/ui-bench --keep   # reuse data
    FLEETROOM_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/fleetroom_bench \\
        uv run --locked python -m bench.server_ui                  # PostgreSQL

(Not in ``bench/run.py``'s menu: that one drives the agent against a simulated fleet
in worker processes; this needs nothing but a database.)

What one run does:

1. a fresh data directory (``--data-dir``, else a temporary one removed at the end)
   with SQLite — or the PostgreSQL database named by ``FLEETROOM_DATABASE_URL``
   (created when missing; dropped at the end only if this run created it and
   ``--keep`` is not given) — migrated;
2. tenants and users through the services (a dealer with ``--customers`` customers
   of three sites each, a second dealer; a dealer admin with TOTP, a customer
   admin), then the fleet straight into the tables with bulk inserts (``executemany``
   on SQLite, ``COPY`` on PostgreSQL): ``--devices`` devices in the dealer's sites,
   ``--readings`` readings (one a day per device, time-major ids like real
   arrival), ``--counters`` counters and ``--supplies`` supplies per reading, the
   daily counter rollups of every finished day, open and closed alerts, status
   changes and "first seen" events; state mix 80 % ok, 10 % warning, 4 % error,
   3 % not reporting, 3 % unknown; about one supply in nine low or empty.  A
   data directory or database that already holds exactly this fleet is reused;
3. every page through Django's test ``Client`` with the logged-in user, whole
   middleware stack and templates included: ``--warmup`` requests, then
   ``--requests`` timed ones per scenario; p50/p95/max in milliseconds and the
   number of SQL queries of one request.

The scenarios the goal applies to are marked ``*`` (dashboard, device list: first
page, a search, a filter, a sort — as the dealer admin who sees every device);
the others (htmx fragment, device detail with its chart, the CSV export, a customer
admin's view) are there for context.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

STATE_MIX = (("ok", 80), ("warning", 10), ("error", 4), ("not_reporting", 3), ("unknown", 3))
MANUFACTURERS = (("Kyocera", "ECOSYS M", "KY"), ("Ricoh", "IM C", "RC"),
                 ("HP", "LaserJet M", "HP"), ("Brother", "MFC-L", "BR"),
                 ("Canon", "imageRUNNER C", "CN"), ("Lexmark", "MX", "LX"))
COUNTERS = ("total", "mono", "colour", "print_total", "copy_total", "scan_total")
SUPPLY_COLOURS = ("black", "cyan", "magenta", "yellow", "black", "black")
SUPPLY_TYPES = ("toner", "toner", "toner", "toner", "opc", "wasteToner")
STALE_DAYS = 3
ATTENTION = ("empty", "full", "low", "almost-full")


def log(msg: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    print(f"[server-ui {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the fleet ------------------------------------------------------------------------


@dataclass
class Plan:
    """What to generate; device ``i`` and reading ``k`` are pure functions of these."""

    devices: int
    per_device: int
    counters: int
    supplies: int
    now: datetime
    site_ids: list[int]
    model_ids: list[tuple[int, str, str, str]]
    """(id, manufacturer, model name, serial prefix)"""

    def state(self, i: int) -> str:
        slot = (i * 37) % 100
        for state, share in STATE_MIX:
            if slot < share:
                return state
            slot -= share
        return "ok"

    def taken(self, i: int, k: int) -> datetime:
        """Reading ``k`` (0 = oldest) of device ``i``: daily, at a per-device minute."""
        back = timedelta(days=self.per_device - 1 - k, minutes=10 + (i * 7) % 1380)
        if self.state(i) == "not_reporting":
            back += timedelta(days=STALE_DAYS)
        return self.now - back

    def counter(self, i: int, c: int, k: int) -> int:
        daily = 40 + (i * 13 + c * 7) % 400
        return 10_000 + (i * 7919 + c * 104_729) % 500_000 + k * daily // (c + 1)

    def level(self, i: int, s: int, k: int) -> int:
        """Percent 0..100, falling by 1–3 points a day, refilled at 0."""
        return (97 + i * 11 + s * 29 - k * (1 + (i + s) % 3)) % 101

    def honest_levels(self, i: int) -> bool:
        """Most models give a level and capacity; some only "some remaining" (-3)."""
        return i % 7 != 0

    def supply(self, i: int, s: int, k: int) -> tuple[str, int, float | None, str]:
        """(type, raw level, percent, state) of supply ``s`` in reading ``k``, by the
        agent's rules: a percentage only from real numbers, ≤ 10 % low/almost full."""
        kind = SUPPLY_TYPES[s % len(SUPPLY_TYPES)]
        receptacle = kind == "wasteToner"
        if not self.honest_levels(i):
            return kind, -3, None, "ok" if receptacle else "some-remaining"
        level = self.level(i, s, k)
        if level == 0:
            state = "full" if receptacle else "empty"
        elif level <= 10:
            state = "almost-full" if receptacle else "low"
        else:
            state = "ok"
        return kind, level, float(level), state

    def attention(self, i: int) -> int:
        """Supplies of the newest reading that need someone (as ingest counts them)."""
        return sum(1 for s in range(self.supplies)
                   if self.supply(i, s, self.per_device - 1)[3] in ATTENTION)


class Writer:
    """Bulk inserts straight into the tables: ``executemany`` on SQLite (its own
    connection, ``synchronous=OFF`` while loading), ``COPY`` on PostgreSQL."""

    def __init__(self, vendor: str, db: dict[str, Any]) -> None:
        self.vendor = vendor
        if vendor == "postgresql":
            import psycopg

            self.conn: Any = psycopg.connect(dbname=db["NAME"], user=db["USER"] or None,
                                             password=db["PASSWORD"] or None,
                                             host=db["HOST"] or None,
                                             port=db["PORT"] or None)
        else:
            import sqlite3

            self.conn = sqlite3.connect(str(db["NAME"]), isolation_level=None)
            self.conn.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; "
                                    "PRAGMA foreign_keys=OFF;")

    def _value(self, v: Any) -> Any:
        if self.vendor == "postgresql":
            return v
        if isinstance(v, datetime):  # Django's SQLite storage: naive UTC text
            return v.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        if isinstance(v, date):
            return v.isoformat()
        if isinstance(v, bool):
            return int(v)
        return v

    def insert(self, table: str, cols: Sequence[str], rows: Iterable[Sequence[Any]],
               *, chunk: int = 100_000) -> int:
        """Insert ``rows`` (committing every ``chunk``); returns how many."""
        quoted = ", ".join(f'"{c}"' for c in cols)
        n = 0
        if self.vendor == "postgresql":
            with self.conn.cursor() as cur, cur.copy(
                    f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
            self.conn.commit()
            return n
        sql = f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join("?" * len(cols))})'
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(tuple(self._value(v) for v in row))
            if len(batch) >= chunk:
                self._flush(sql, batch)
                n += len(batch)
                batch = []
        self._flush(sql, batch)
        return n + len(batch)

    def _flush(self, sql: str, batch: list[tuple[Any, ...]]) -> None:
        if batch:
            self.conn.execute("BEGIN")
            self.conn.executemany(sql, batch)
            self.conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement, committed."""
        if self.vendor == "postgresql":
            self.conn.execute(sql, params)
            self.conn.commit()
        else:
            self.conn.execute(sql.replace("%s", "?"), [self._value(p) for p in params])

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement for many rows, committed."""
        if self.vendor == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(sql, list(rows))
            self.conn.commit()
        else:
            self.conn.execute("BEGIN")
            self.conn.executemany(sql.replace("%s", "?"),
                                  [[self._value(v) for v in r] for r in rows])
            self.conn.execute("COMMIT")

    def close(self) -> None:
        """Finish: statistics for the planner, checkpoint the WAL, close."""
        if self.vendor == "postgresql":
            self.conn.autocommit = True
            self.conn.execute("VACUUM ANALYZE")
        else:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


def _payloads() -> list[bytes]:
    """A pool of reading payloads the size of real ones (~1.3 kB compressed); the UI
    never reads them, but they make the reading table as big as it would be."""
    out = []
    for n in range(64):
        doc = json.dumps({"schema": "fleetroom.reading/1", "n": n,
                          "noise": secrets.token_hex(600)}).encode()
        out.append(zlib.compress(doc, 1))
    return out


def generate(w: Writer, plan: Plan, *, first_device_id: int = 1) -> dict[str, int]:
    """Every fleet row of the plan; returns rows per table."""
    counts: dict[str, int] = {}
    d, r = plan.devices, plan.per_device
    models = plan.model_ids
    sites = plan.site_ids
    created = plan.now - timedelta(days=r + STALE_DAYS + 1)
    dev = first_device_id

    def device_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(d):
            model_id, mfr, _name, prefix = models[i % len(models)]
            state = plan.state(i)
            stored = "ok" if state in ("not_reporting", "unknown") and i % 2 else state
            if state == "unknown":
                stored = "unknown"
            yield (dev + i, sites[i % len(sites)], f"serial/{mfr.upper()}/{prefix}{i:07d}",
                   "serial", False, mfr, f"{prefix}{i:07d}", mfr, model_id, "printer",
                   f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                   f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                   f"{prefix.lower()}-{sites[i % len(sites)]}-{i:05d}", "1.0", f"PRN{i:05d}",
                   f"Building {i % 9}, floor {i % 5}", "", "", plan.taken(i, 0),
                   plan.taken(i, r - 1), None, stored, plan.taken(i, r - 1),
                   {"ok": "running", "warning": "warning", "error": "down"}.get(state, ""),
                   "" if state == "unknown" else "idle", "", plan.attention(i), created)

    counts["fleet_device"] = w.insert("fleet_device", (
        "id", "tenant_id", "identity_key", "identity_kind", "identity_weak", "manufacturer",
        "serial", "vendor", "model_id", "device_kind", "ip", "mac", "hostname", "firmware",
        "sys_name", "sys_location", "asset_number", "cost_centre", "first_seen", "last_seen",
        "last_reading_id", "status", "status_changed_at", "device_status", "printer_status",
        "error_state_raw", "supplies_attention", "created_at"), device_rows())
    log(f"devices: {counts['fleet_device']:,}")

    payloads = _payloads()
    def rid(i: int, k: int) -> int:
        """Reading id of device ``i``'s ``k``-th reading: time-major, as readings arrive."""
        return k * d + i + 1


    def reading_rows() -> Iterator[tuple[Any, ...]]:
        for k in range(r):
            for i in range(d):
                t = plan.taken(i, k)
                yield (rid(i, k), dev + i, sites[i % len(sites)], t, t + timedelta(seconds=2),
                       None, "2c", "site", "generic-printer", f"10.0.0.{i % 250}", 350, False,
                       payloads[(i + k) % len(payloads)])

    t0 = time.perf_counter()
    counts["fleet_reading"] = w.insert("fleet_reading", (
        "id", "device_id", "tenant_id", "taken_at", "received_at", "agent_id", "snmp_version",
        "credential", "profile", "target", "duration_ms", "identity_weak", "payload"),
        reading_rows())
    log(f"readings: {counts['fleet_reading']:,} ({time.perf_counter() - t0:.0f} s)")

    names = COUNTERS[:plan.counters]

    def counter_rows() -> Iterator[tuple[Any, ...]]:
        for k in range(r):
            for i in range(d):
                t = plan.taken(i, k)
                for c, name in enumerate(names):
                    v = plan.counter(i, c, k)
                    delta = None if k == 0 else v - plan.counter(i, c, k - 1)
                    yield (rid(i, k), dev + i, sites[i % len(sites)], t, name, v,
                           "impressions", 32, delta)

    t0 = time.perf_counter()
    counts["fleet_countervalue"] = w.insert("fleet_countervalue", (
        "reading_id", "device_id", "tenant_id", "taken_at", "name", "value", "unit", "width",
        "delta"), counter_rows())
    log(f"counter values: {counts['fleet_countervalue']:,} ({time.perf_counter() - t0:.0f} s)")

    def supply_rows() -> Iterator[tuple[Any, ...]]:
        for k in range(r):
            for i in range(d):
                t = plan.taken(i, k)
                for s in range(plan.supplies):
                    kind, level, pct, state = plan.supply(i, s, k)
                    yield (rid(i, k), dev + i, sites[i % len(sites)], t, str(s + 1),
                           "receptacle" if kind == "wasteToner" else "consumed", kind,
                           SUPPLY_COLOURS[s % len(SUPPLY_COLOURS)] if kind == "toner" else "",
                           "", f"TK-{s}", pct, state, level, 100, "percent")

    t0 = time.perf_counter()
    counts["fleet_supplylevel"] = w.insert("fleet_supplylevel", (
        "reading_id", "device_id", "tenant_id", "taken_at", "supply_index", "supply_class",
        "supply_type", "colour", "description", "part_number", "level_percent", "state",
        "raw_level", "raw_max", "unit"), supply_rows())
    log(f"supply levels: {counts['fleet_supplylevel']:,} ({time.perf_counter() - t0:.0f} s)")

    def daily_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(d):
            for c, name in enumerate(names):
                for k in range(r - 1):  # every finished day; the newest is not rolled yet
                    t = plan.taken(i, k)
                    v = plan.counter(i, c, k)
                    usage = 0 if k == 0 else v - plan.counter(i, c, k - 1)
                    yield (dev + i, sites[i % len(sites)], name, t.astimezone(UTC).date(),
                           "impressions", v, t, v, t, usage, 1, 1 if k == 0 else 0)

    t0 = time.perf_counter()
    counts["fleet_counterdaily"] = w.insert("fleet_counterdaily", (
        "device_id", "tenant_id", "name", "day", "unit", "first_value", "first_at",
        "last_value", "last_at", "usage", "samples", "samples_without_delta"), daily_rows())
    log(f"daily counters: {counts['fleet_counterdaily']:,} ({time.perf_counter() - t0:.0f} s)")

    def alert_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(d):
            site = sites[i % len(sites)]
            for k in range(5, r - 1, 20):  # closed history: one every 20 days
                t = plan.taken(i, k)
                yield (dev + i, site, f"prtAlertTable:tonerLow:{k}::", "prtAlertTable",
                       "warning", "tonerLow", k, "", None, None, "", "Toner low", None, t, t,
                       plan.taken(i, k + 1))
            state = plan.state(i)
            last = plan.taken(i, r - 1)
            if state in ("warning", "error"):
                yield (dev + i, site, "prtAlertTable:tonerLow:1::", "prtAlertTable", "warning",
                       "tonerLow", 1, "", None, None, "", "Toner low (cyan)", None,
                       last - timedelta(days=2), last, None)
            if state == "error":
                yield (dev + i, site, "prtAlertTable:jammed:2::", "prtAlertTable", "critical",
                       "jammed", 2, "", None, None, "", "Paper jam", None,
                       last - timedelta(hours=5), last, None)

    counts["fleet_alertrecord"] = w.insert("fleet_alertrecord", (
        "device_id", "tenant_id", "key", "source", "severity", "code", "alert_index", "group",
        "group_index", "location", "training_level", "description", "time_ticks",
        "opened_at", "last_seen_at", "closed_at"), alert_rows())

    def status_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(d):
            site = sites[i % len(sites)]
            yield (dev + i, site, plan.taken(i, 0), "ok", "running", "idle", "", "[]")
            state = plan.state(i)
            if state in ("warning", "error"):
                yield (dev + i, site, plan.taken(i, r - 3), state,
                       "warning" if state == "warning" else "down", "idle", "", "[]")

    counts["fleet_statussample"] = w.insert("fleet_statussample", (
        "device_id", "tenant_id", "taken_at", "status", "device_status", "printer_status",
        "error_state_raw", "error_flags"), status_rows())

    counts["fleet_deviceevent"] = w.insert("fleet_deviceevent", (
        "device_id", "tenant_id", "kind", "occurred_at", "reading_id", "details"),
        ((dev + i, sites[i % len(sites)], "created", plan.taken(i, 0), rid(i, 0),
          '{"identity_kind": "serial"}') for i in range(d)))

    w.executemany("UPDATE fleet_device SET last_reading_id = %s WHERE id = %s",
                  ((rid(i, r - 1), dev + i) for i in range(d)))
    yesterday = plan.now.astimezone(UTC).date() - timedelta(days=1)
    w.execute("INSERT INTO fleet_rollupcursor (name, rolled_through, updated_at) "
              "VALUES (%s, %s, %s)", ("counters", yesterday, plan.now))
    if w.vendor == "postgresql":
        for table in ("fleet_device", "fleet_reading", "fleet_countervalue",
                      "fleet_supplylevel", "fleet_counterdaily", "fleet_alertrecord",
                      "fleet_statussample", "fleet_deviceevent"):
            w.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                      f"(SELECT MAX(id) FROM {table}))")
    return counts


# --- setup ------------------------------------------------------------------------------


@dataclass
class World:
    """The tenants and users the measurements use."""

    dealer_user: Any
    customer_user: Any
    customer_devices: int
    sample_device_id: int
    generated: dict[str, int] = field(default_factory=dict)
    generate_s: float = 0.0


def setup(args: argparse.Namespace) -> World:
    """Migrate, create tenants and users (services), load the fleet (bulk)."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from fleetroom.accounts.models import User
    from fleetroom.accounts.testing import enable_totp, make_user
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.fleet.models import Device, DeviceModel
    from fleetroom.fleet.models import Reading as ReadingRow
    from fleetroom.tenancy.models import Tenant
    from fleetroom.tenancy.services import do_create_tenant, do_grant_membership

    call_command("migrate", interactive=False, verbosity=0)
    # As `fleetroom serve` does: hashed static names come from the manifest.
    call_command("collectstatic", interactive=False, verbosity=0)
    have = Device.objects.count()
    if have:
        readings = ReadingRow.objects.count()
        if have != args.devices or readings != args.readings:
            raise SystemExit(f"the database holds another fleet ({have:,} devices, "
                             f"{readings:,} readings); use an empty one")
        log(f"reusing the fleet in the database ({have:,} devices, {readings:,} readings)")
        dealer_user = User.objects.get(username="bench-dealer")
        customer_user = User.objects.get(username="bench-customer")
        customer = Tenant.objects.get(name="Customer 000")
        return World(dealer_user, customer_user,
                     Device.objects.filter(tenant__path__startswith=customer.path).count(),
                     Device.objects.order_by("pk").values_list("pk", flat=True)[
                         args.devices // 2])

    t0 = time.perf_counter()
    op = do_create_tenant(None, "operator", "Bench platform", SYSTEM)
    dealer = do_create_tenant(op, "dealer", "Bench dealer", SYSTEM)
    other = do_create_tenant(op, "dealer", "Other dealer", SYSTEM)
    do_create_tenant(do_create_tenant(other, "customer", "Elsewhere", SYSTEM), "site",
                     "Far away", SYSTEM)
    site_ids: list[int] = []
    customers = []
    for c in range(args.customers):
        customer = do_create_tenant(dealer, "customer", f"Customer {c:03d}", SYSTEM)
        customers.append(customer)
        for s in range(3):
            site_ids.append(do_create_tenant(customer, "site", f"Site {s + 1}", SYSTEM).pk)
    models = []
    for m, (mfr, series, prefix) in enumerate(MANUFACTURERS):
        for n in range(5):
            name = f"{series}{3000 + 100 * n + m}"
            dm = DeviceModel.objects.create(
                manufacturer=mfr, name=name, manufacturer_key=mfr.upper(),
                name_key=name.upper(), device_kind="printer", is_colour=n % 2 == 0)
            models.append((dm.pk, mfr, name, prefix))
    dealer_user = make_user("bench-dealer")
    do_grant_membership(dealer_user, dealer, role="dealer_admin", acting_user=SYSTEM)
    enable_totp(dealer_user)  # dealer roles must use MFA; a session would have passed it
    customer_user = make_user("bench-customer")
    do_grant_membership(customer_user, customers[0], role="customer_admin", acting_user=SYSTEM)
    log(f"tenants and users: {len(site_ids)} sites ({time.perf_counter() - t0:.1f} s)")

    plan = Plan(devices=args.devices, per_device=max(1, args.readings // args.devices),
                counters=args.counters, supplies=args.supplies,
                now=datetime.now(UTC).replace(microsecond=0), site_ids=site_ids,
                model_ids=models)
    connection.close()
    t0 = time.perf_counter()
    w = Writer(connection.vendor, settings.DATABASES["default"])
    generated = generate(w, plan)
    log("analysing / checkpointing")
    w.close()
    elapsed = time.perf_counter() - t0
    log(f"fleet generated in {elapsed:.0f} s")
    customer_sites = set(site_ids[:3])
    return World(dealer_user, customer_user,
                 sum(1 for i in range(args.devices)
                     if site_ids[i % len(site_ids)] in customer_sites),
                 args.devices // 2 + 1, generated, elapsed)


# --- measuring --------------------------------------------------------------------------


@dataclass
class Result:
    """One scenario's timings."""

    name: str
    url: str
    goal: bool
    samples_ms: list[float]
    queries: int
    status: int
    bytes: int

    def pct(self, p: float) -> float:
        """The ``p``-th percentile (nearest rank)."""
        ordered = sorted(self.samples_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def as_dict(self) -> dict[str, Any]:
        """Figures for ``--json``."""
        return {"name": self.name, "url": self.url, "goal": self.goal,
                "p50_ms": round(self.pct(50), 1), "p95_ms": round(self.pct(95), 1),
                "max_ms": round(max(self.samples_ms), 1), "n": len(self.samples_ms),
                "queries": self.queries, "status": self.status, "bytes": self.bytes}


def _body(response: Any) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return bytes(response.content)


def measure(client: Any, name: str, url: str, *, goal: bool, requests: int, warmup: int,
            headers: dict[str, str] | None = None,
            check: Callable[[bytes], None] | None = None) -> Result:
    """Time ``requests`` GETs of ``url`` after ``warmup`` untimed ones."""
    from django.db import connection

    headers = headers or {}
    for _ in range(warmup):
        _body(client.get(url, headers=headers))
    queries: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append(sql)
        return execute(sql, params, many, context)

    # An execute wrapper, not CaptureQueriesContext: each request resets the query log.
    with connection.execute_wrapper(count):
        response = client.get(url, headers=headers)
        body = _body(response)
    if response.status_code != 200:
        raise RuntimeError(f"{name}: {url} answered {response.status_code}")
    if check is not None:
        check(body)
    samples = []
    for _ in range(requests):
        t0 = time.perf_counter()
        response = client.get(url, headers=headers)
        _body(response)
        samples.append((time.perf_counter() - t0) * 1000)
    log(f"{name}: p95 {sorted(samples)[max(0, math.ceil(0.95 * len(samples)) - 1)]:.0f} ms")
    return Result(name, url, goal, samples, len(queries), response.status_code, len(body))


def scenarios(world: World, args: argparse.Namespace) -> list[Result]:
    """Every page, as the dealer admin (all devices) and a customer admin."""
    from django.test import Client

    def rows_at_least(n: int) -> Callable[[bytes], None]:
        def check(body: bytes) -> None:
            found = body.count(b'<td><a href="/fleet/devices/')
            if found < n:
                raise RuntimeError(f"expected at least {n} rows, got {found}")
        return check

    dealer = Client(HTTP_HOST="localhost")
    dealer.force_login(world.dealer_user)
    customer = Client(HTTP_HOST="localhost")
    customer.force_login(world.customer_user)
    kw = {"requests": args.requests, "warmup": args.warmup}
    htmx = {"HX-Request": "true", "HX-Target": "device-results"}
    detail = f"/fleet/devices/{world.sample_device_id}/"
    out = [
        measure(dealer, "dashboard", "/fleet/", goal=True, **kw),
        measure(dealer, "list: first page", "/fleet/devices/", goal=True,
                check=rows_at_least(50), **kw),
        measure(dealer, "list: search", "/fleet/devices/?q=0042", goal=True,
                check=rows_at_least(10), **kw),
        measure(dealer, "list: filter", "/fleet/devices/?state=warning&manufacturer=Kyocera",
                goal=True, check=rows_at_least(10), **kw),
        measure(dealer, "list: sort by model", "/fleet/devices/?sort=model", goal=True,
                check=rows_at_least(50), **kw),
        measure(dealer, "list: sort by last reading, page 20",
                "/fleet/devices/?sort=-last_seen&page=20", goal=True,
                check=rows_at_least(50), **kw),
        measure(dealer, "list: search, htmx fragment", "/fleet/devices/?q=0042", goal=False,
                headers=htmx, check=rows_at_least(10), **kw),
        measure(dealer, "list: low supplies filter", "/fleet/devices/?supplies=low",
                goal=False, check=rows_at_least(50), **kw),
        measure(dealer, "device detail (30-day chart)", detail, goal=False, **kw),
        measure(dealer, "device detail (1-year chart)", f"{detail}?period=365", goal=False,
                **kw),
        measure(customer, f"customer ({world.customer_devices} devices): dashboard",
                "/fleet/", goal=False, **kw),
        measure(customer, "customer: list", "/fleet/devices/", goal=False, **kw),
    ]
    if not args.no_export:
        out.append(measure(dealer, f"CSV export ({args.devices:,} devices)",
                           "/fleet/devices/export.csv", goal=False,
                           requests=max(3, args.requests // 10), warmup=1))
    return out


def render(results: list[Result], world: World, backend: str, args: argparse.Namespace
           ) -> str:
    """A Markdown table of the figures."""
    lines = [f"Fleet UI on {backend}: {args.devices:,} devices, {args.readings:,} readings "
             f"({args.requests} requests per row after {args.warmup} warm-up; * = goal "
             f"p95 < {args.goal_ms} ms)", "",
             "| scenario | p50 ms | p95 ms | max ms | queries | KiB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {'* ' if r.goal else ''}{r.name} | {r.pct(50):.0f} | {r.pct(95):.0f} "
                     f"| {max(r.samples_ms):.0f} | {r.queries} | {r.bytes / 1024:.0f} |")
    if world.generated:
        rows = sum(world.generated.values())
        lines += ["", f"Generated {rows:,} rows in {world.generate_s:.0f} s: " + ", ".join(
            f"{t.removeprefix('fleet_')} {n:,}" for t, n in world.generated.items())]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------


def _prepare_postgres(url: str) -> bool:
    """Create the database named in ``url`` when missing; True when created here."""
    import psycopg

    parts = urlparse(url)
    name = (parts.path or "/fleetroom").lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (name,)).fetchone()
        if exists:
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
    return True


def _drop_postgres(url: str) -> None:
    import psycopg

    parts = urlparse(url)
    name = (parts.path or "/fleetroom").lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, set up the data directory and database, measure, report."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--counters", type=int, default=3, choices=range(1, len(COUNTERS) + 1),
                    metavar=f"1..{len(COUNTERS)}")
    ap.add_argument("--supplies", type=int, default=4, choices=range(0, 7), metavar="0..6")
    ap.add_argument("--customers", type=int, default=40, help="of the dealer, 3 sites each")
    ap.add_argument("--requests", type=int, default=40, help="timed requests per scenario")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--goal-ms", type=int, default=300)
    ap.add_argument("--data-dir", type=Path,
                    help="use (and keep) this data directory; a fleet in it is reused")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary data directory / created PostgreSQL database")
    ap.add_argument("--no-export", action="store_true", help="skip the CSV export scenario")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="fleetroom-bench-ui-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    keep_dir = args.keep or args.data_dir is not None
    os.environ["FLEETROOM_DATA_DIR"] = str(data_dir)
    key_file = data_dir / "bench-secret-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(64))
    os.environ["FLEETROOM_SECRET_KEY"] = key_file.read_text()
    os.environ["DJANGO_SETTINGS_MODULE"] = "fleetroom.settings"
    pg_url = os.environ.get("FLEETROOM_DATABASE_URL", "")
    created_db = _prepare_postgres(pg_url) if pg_url else False
    try:
        import django

        django.setup()
        from django.db import connection

        backend = connection.vendor
        log(f"{backend}: data in {data_dir}" + (f", database {pg_url}" if pg_url else ""))
        world = setup(args)
        results = scenarios(world, args)
        print(render(results, world, backend, args))
        if args.json:
            print(json.dumps({"backend": backend, "devices": args.devices,
                              "readings": args.readings, "generated": world.generated,
                              "generate_s": round(world.generate_s, 1),
                              "results": [r.as_dict() for r in results]}))
        failed = [r.name for r in results if r.goal and r.pct(95) >= args.goal_ms]
        if failed:
            log(f"over the goal: {', '.join(failed)}")
        return 1 if failed else 0
    finally:
        from django.db import connections

        connections.close_all()
        if created_db and not args.keep:
            _drop_postgres(pg_url)
        if not keep_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

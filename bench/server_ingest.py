"""Server ingest throughput: ``ingest_readings`` against a raw ``executemany`` floor.

Usage::

    uv run python -m bench.server_ingest                       # SQLite and PostgreSQL
    uv run python -m bench.server_ingest --backends sqlite --counter-rows 20000
    uv run python -m bench.server_ingest --pg-url postgresql://postgres@127.0.0.1:5432

What one run does, per backend, in a fresh process (fresh Django settings, a fresh
database: a temporary SQLite file, or a throw-away PostgreSQL database created
here and dropped at the end):

1. migrates, creates a site through the tenancy services, and builds readings in
   memory: ``--devices`` printers × enough time steps for ``--counter-rows`` counter
   rows (``--counters`` counters and ``--supplies`` supplies per reading, a
   Counter32 near its wrap on some devices, alerts that open and close), then
   ``gc.freeze()`` so the garbage collector does not rescan that input heap (a
   worker holds one batch, not the whole run);
2. **service**: :func:`fleetroom.fleet.services.ingest_readings` over all of them
   (``--batch`` readings per transaction), timed — devices created, identity and
   duplicate checks, deltas, alert lifecycles, payload compression, audit rows;
3. **duplicates**: the same readings again (all duplicates), timed;
4. reads back every row the service wrote in the fleet and audit tables, empties
   those tables (and ``VACUUM``s SQLite), then
5. **raw**: inserts exactly those rows again with the database driver directly
   (``sqlite3`` / ``psycopg``), one ``executemany`` per table, committing every
   ``--batch`` readings like the service does, timed.  This is the floor: no
   Python-side work at all, values prepared beforehand.

Steps 2–5 run ``--repeat`` times on emptied tables; the best time of each kind
is reported (on a shared machine, load swings single runs by ±10 points).  It
prints readings/s for both and the ratio service/raw (goal: ≥ 50 %), and every
sample as one JSON line per backend with ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLEET_TABLES = ("fleet_devicemodel", "fleet_device", "fleet_reading", "fleet_countervalue",
                "fleet_supplylevel", "fleet_alertrecord", "fleet_statussample",
                "fleet_deviceevent", "core_auditevent", "core_auditchainhead")
"""Insert order for the raw floor (parents first; the device→last reading key is
deferred on both databases, so final device rows go in as they are)."""
PER_READING = ("fleet_reading", "fleet_countervalue", "fleet_supplylevel")
COUNTER_NAMES = ("total", "mono", "colour", "print_total", "print_mono", "print_colour",
                 "copy_total", "copy_mono", "copy_colour", "scan_total", "fax_total",
                 "duplex", "large_total", "small_total", "engine_total", "clicks")


def log(msg: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    print(f"[server-ingest {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- parent ------------------------------------------------------------------------


def _pg_admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{url.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """One backend in a child process; returns its figures."""
    data_dir = Path(tempfile.mkdtemp(prefix="fleetroom-bench-ingest-"))
    env = {**os.environ, "FLEETROOM_DATA_DIR": str(data_dir),
           "FLEETROOM_SECRET_KEY": secrets.token_urlsafe(64),
           "DJANGO_SETTINGS_MODULE": "fleetroom.settings"}
    env.pop("FLEETROOM_DATABASE_URL", None)
    dbname = f"fleetroom_bench_{os.getpid()}"
    if backend == "postgres":
        _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{dbname}"')
        _pg_admin(args.pg_url, f'CREATE DATABASE "{dbname}"')
        env["FLEETROOM_DATABASE_URL"] = f"{args.pg_url.rstrip('/')}/{dbname}"
    cmd = [sys.executable, "-m", "bench.server_ingest", "--child", backend,
           "--counter-rows", str(args.counter_rows), "--devices", str(args.devices),
           "--counters", str(args.counters), "--supplies", str(args.supplies),
           "--batch", str(args.batch), "--repeat", str(args.repeat)]
    try:
        p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=args.timeout, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"{backend} run failed:\n{p.stderr[-4000:]}")
        sys.stderr.write(p.stderr)
        return dict(json.loads(p.stdout.strip().splitlines()[-1]))
    finally:
        if backend == "postgres":
            _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{dbname}"')
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


def render(results: list[dict[str, Any]]) -> str:
    """A Markdown table of the figures."""
    lines = [
        "| backend | readings | rows | service readings/s | raw readings/s | service/raw "
        "| duplicates readings/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['readings']:,} | {r['rows']:,} "
            f"| {r['service_rps']:,.0f} | {r['raw_rps']:,.0f} "
            f"| {100 * r['ratio']:.0f} % | {r['duplicate_rps']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; run the child (``--child``) or every backend."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="sqlite,postgres",
                    help="comma list of sqlite, postgres")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432",
                    help="PostgreSQL server (a throw-away database is created there)")
    ap.add_argument("--counter-rows", type=int, default=100_000,
                    help="size of the run in counter rows (readings × counters)")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--counters", type=int, default=12, choices=range(1, 17),
                    metavar="1..16")
    ap.add_argument("--supplies", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500, help="readings per transaction")
    ap.add_argument("--repeat", type=int, default=3,
                    help="service/raw pairs per backend; the best of each is reported")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", action="store_true", help="also print one JSON line per backend")
    ap.add_argument("--child", choices=("sqlite", "postgres"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    results = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        log(f"{backend}: {args.counter_rows:,} counter rows, {args.devices} devices")
        results.append(run_backend(backend, args))
    print(render(results))
    if args.json:
        for r in results:
            print(json.dumps(r))
    return 0


# --- child -------------------------------------------------------------------------


def make_readings(devices: int, steps: int, counters: int, supplies: int) -> list[Any]:
    """``devices`` × ``steps`` readings, hourly, in arrival order (time outer)."""
    from fleetroom_protocol import Alert, Counter, Identity, ProfileMatch, Reading, Status, Supply

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=steps + 1)
    names = COUNTER_NAMES[:counters]
    out = []
    for step in range(steps):
        taken = start + timedelta(hours=step)
        for d in range(devices):
            wrapping = d % 10 == 0  # a tenth of the fleet passes 2**32 during the run
            base = (2**32 - 50 * steps // 2) if wrapping else 100_000 + d * 1000
            jam = step % 5 == 2 and d % 7 == 0  # alerts that open, then close
            out.append(Reading(
                taken_at=taken, duration_ms=350, target=f"10.{d // 65536}.{d // 256 % 256}."
                f"{d % 256}", snmp_version="2c", credential="site",
                profile=ProfileMatch(name="generic-printer", chain=["printer-mib"],
                                     reason="bench"),
                identity=Identity(vendor="BenchCo", manufacturer="BenchCo",
                                  model=f"Model {d % 20}", serial=f"BENCH{d:07d}",
                                  mac=f"02:00:00:{d >> 16 & 255:02x}:{d >> 8 & 255:02x}:"
                                      f"{d & 255:02x}",
                                  ip=f"10.{d // 65536}.{d // 256 % 256}.{d % 256}",
                                  sys_name=f"PRN-{d:05d}", device_kind="printer"),
                counters=[Counter(name=n, value=(base + 50 * step + i) % 2**32,
                                  unit="impressions", source=f"1.3.6.1.2.1.43.10.2.1.4.1.{i}",
                                  width=32) for i, n in enumerate(names)],
                supplies=[Supply(index=i + 1, type="toner", colour="black",
                                 description=f"Toner {i}", level_percent=float(90 - step % 80),
                                 raw_level=90 - step % 80, raw_max=100, unit="percent")
                          for i in range(supplies)],
                alerts=[Alert(source="prtAlertTable", severity="critical", code="jam",
                              index=step, group="mediaPath", group_index=1)] if jam else [],
                status=Status(device_status="down" if jam else "running",
                              printer_status="other" if jam else "idle",
                              error_state_raw="04" if jam else "00"),
            ))
    return out


def _dump(conn: Any) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    out = {}
    with conn.cursor() as cur:
        for table in FLEET_TABLES:
            cur.execute(f"SELECT * FROM {table}")
            cols = [c[0] for c in cur.description]
            out[table] = (cols, [tuple(r) for r in cur.fetchall()])
    return out


def _reset(conn: Any, vendor: str) -> None:
    """Empty the measured tables and compact them, so every run starts alike."""
    _empty(conn, vendor)
    with conn.cursor() as cur:
        cur.execute("VACUUM" if vendor == "sqlite" else "VACUUM ANALYZE")


def _empty(conn: Any, vendor: str) -> None:
    from django.db import transaction

    # One transaction: the device → last reading key is only checked at commit.
    with transaction.atomic(), conn.cursor() as cur:
        if vendor == "postgresql":
            cur.execute("TRUNCATE " + ", ".join(FLEET_TABLES) + " CASCADE")
        else:
            for table in reversed(FLEET_TABLES):
                cur.execute(f"DELETE FROM {table}")


def _raw_sqlite_value(v: Any) -> Any:
    if isinstance(v, datetime):  # what Django's SQLite backend stores: naive UTC text
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v.isoformat(sep=" ")
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def raw_insert(vendor: str, settings_db: dict[str, Any],
               rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]], batch: int) -> float:
    """Insert ``rows`` with the driver directly; seconds taken."""
    if vendor == "postgresql":
        import psycopg
        from psycopg.types.json import Jsonb

        conn: Any = psycopg.connect(dbname=settings_db["NAME"], user=settings_db["USER"],
                                    host=settings_db["HOST"], port=settings_db["PORT"] or 5432)
        mark = "%s"

        def prep(table: str, cols: list[str], data: list[tuple[Any, ...]]
                 ) -> list[tuple[Any, ...]]:
            json_cols = {i for i, c in enumerate(cols) if c in {"details", "error_flags",
                                                                "colorants", "data"}}
            if not json_cols:
                return data
            # Django reads jsonb back as text; the driver needs the value wrapped.
            return [tuple(Jsonb(json.loads(v) if isinstance(v, str) else v)
                          if i in json_cols else v for i, v in enumerate(r)) for r in data]
    else:
        import sqlite3

        conn = sqlite3.connect(settings_db["NAME"], isolation_level=None)
        conn.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                           "PRAGMA foreign_keys=ON;")
        mark = "?"

        def prep(table: str, cols: list[str], data: list[tuple[Any, ...]]
                 ) -> list[tuple[Any, ...]]:
            return [tuple(_raw_sqlite_value(v) for v in r) for r in data]

    prepared = {t: (cols, prep(t, cols, data)) for t, (cols, data) in rows.items()}
    sql = {t: f"INSERT INTO {t} ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)}) "
              f"VALUES ({', '.join([mark] * len(cols))})"
           for t, (cols, _) in prepared.items()}
    # Group child rows by the batch their reading belongs to (readings in id order).
    reading_cols, reading_rows = prepared["fleet_reading"]
    rid = reading_cols.index("id")
    in_order = sorted(reading_rows, key=lambda r: r[rid])
    batch_of = {r[rid]: i // batch for i, r in enumerate(in_order)}
    batches: dict[int, dict[str, list[tuple[Any, ...]]]] = {}
    for table in PER_READING:
        cols, data = prepared[table]
        key = cols.index("id" if table == "fleet_reading" else "reading_id")
        for r in data:
            batches.setdefault(batch_of[r[key]], {}).setdefault(table, []).append(r)

    def begin() -> None:
        if vendor != "postgresql":
            conn.execute("BEGIN IMMEDIATE")

    # Devices go in first without their last reading (a key checked at each commit),
    # which one UPDATE per device sets at the end, as the service's UPDATE does.
    dev_cols, dev_rows = prepared["fleet_device"]
    last = dev_cols.index("last_reading_id")
    dev_id = dev_cols.index("id")
    prepared["fleet_device"] = (dev_cols, [(*r[:last], None, *r[last + 1:]) for r in dev_rows])
    set_last = [(r[last], r[dev_id]) for r in dev_rows]
    after = ("fleet_deviceevent",)  # they point at readings

    def commit() -> None:
        if vendor == "postgresql":
            conn.commit()
        else:
            conn.execute("COMMIT")

    t0 = time.perf_counter()
    begin()
    cur = conn.cursor()
    for table in FLEET_TABLES:  # the low-volume tables, in one transaction
        if table not in PER_READING and table not in after and prepared[table][1]:
            cur.executemany(sql[table], prepared[table][1])
    commit()
    for i in sorted(batches):
        begin()
        for table in PER_READING:
            chunk = batches[i].get(table)
            if chunk:
                cur.executemany(sql[table], chunk)
        commit()
    begin()
    for table in after:
        if prepared[table][1]:
            cur.executemany(sql[table], prepared[table][1])
    cur.executemany(f"UPDATE fleet_device SET last_reading_id = {mark} WHERE id = {mark}",
                    set_last)
    commit()
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Run inside a fresh process with the backend's settings in the environment."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.fleet.services import ingest_readings
    from fleetroom.tenancy.services import do_create_tenant

    vendor = connection.vendor
    call_command("migrate", interactive=False, verbosity=0)
    op = do_create_tenant(None, "operator", "Bench", SYSTEM)
    dealer = do_create_tenant(op, "dealer", "Dealer", SYSTEM)
    customer = do_create_tenant(dealer, "customer", "Customer", SYSTEM)
    site = do_create_tenant(customer, "site", "Site", SYSTEM)

    steps = max(1, math.ceil(args.counter_rows / (args.devices * args.counters)))
    readings = make_readings(args.devices, steps, args.counters, args.supplies)
    log(f"{vendor}: {len(readings):,} readings ({args.devices} devices × {steps} steps)")
    # The pre-built input is a benchmark artefact (a worker holds one batch, not the
    # whole run): freeze it so the cyclic GC does not rescan it on every collection
    # and charge that to the service.  The service's own allocations are unaffected.
    gc.collect()
    gc.freeze()

    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    counts: dict[str, int] = {}
    service: list[float] = []
    duplicate: list[float] = []
    raw: list[float] = []
    for rep in range(args.repeat):
        _reset(connection, vendor)
        gc.collect()
        t0 = time.perf_counter()
        summary = ingest_readings(readings, tenant=site, batch_size=args.batch)
        service.append(time.perf_counter() - t0)
        assert summary.stored == len(readings), summary.problems[:3]
        t0 = time.perf_counter()
        again = ingest_readings(readings, tenant=site, batch_size=args.batch)
        duplicate.append(time.perf_counter() - t0)
        assert again.duplicates == len(readings)
        if not rows:
            rows = _dump(connection)
            counts = {t: len(data) for t, (_, data) in rows.items()}
        _reset(connection, vendor)
        connection.close()
        raw.append(raw_insert(vendor, settings.DATABASES["default"], rows, args.batch))
        connection.connect()
        with connection.cursor() as cur:
            for table, n in counts.items():
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                assert cur.fetchone()[0] == n, table
        log(f"{vendor}: run {rep + 1}/{args.repeat}: service {service[-1]:.2f} s, "
            f"raw {raw[-1]:.2f} s, duplicates {duplicate[-1]:.2f} s")
    service_s, raw_s, duplicate_s = min(service), min(raw), min(duplicate)
    total_rows = sum(counts.values())
    return {
        "backend": vendor, "readings": len(readings), "devices": args.devices,
        "counter_rows": counts["fleet_countervalue"],
        "supply_rows": counts["fleet_supplylevel"], "rows": total_rows, "tables": counts,
        "batch": args.batch, "repeat": args.repeat, "service_s": round(service_s, 3),
        "raw_s": round(raw_s, 3), "duplicate_s": round(duplicate_s, 3),
        "samples": {"service_s": [round(x, 3) for x in service],
                    "raw_s": [round(x, 3) for x in raw],
                    "duplicate_s": [round(x, 3) for x in duplicate]},
        "service_rps": len(readings) / service_s, "raw_rps": len(readings) / raw_s,
        "duplicate_rps": len(readings) / duplicate_s, "ratio": raw_s / service_s,
    }


if __name__ == "__main__":
    sys.exit(main())

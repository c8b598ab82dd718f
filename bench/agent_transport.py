"""Agent → server over HTTPS: sustained ingest, drain after a 72-hour outage, agent cost.

Usage::

    uv run python -m bench.agent_transport                      # SQLite and PostgreSQL
    uv run python -m bench.agent_transport --backends sqlite --quick
    make bench-transport

One *run* per (backend, schedule), each on a fresh server data directory (and, for
PostgreSQL, a throw-away database created here and dropped at the end):

1. the server is set up (``fleetroom init``, ``tls-selfsigned``, migrations, a site),
   the real ``fleetroom serve`` started (gunicorn over TLS with the agents' listener,
   the Huey worker), an agent enrolled with the real ``fleetroom-agent enroll``;
2. the server is stopped — the outage — and the agent
   (:mod:`tests.support.chaos_agent`: the production runtime, sender and HTTPS
   transport with their production settings: 500 items / 1 MB per batch) stores the
   meter reads a ``--devices`` site makes in ``--hours`` at that schedule's interval
   (the server's default, daily: 3 reads per device in 72 h; the densest the protocol
   allows, 3-hourly: 24), then stops;
3. ``fleetroom serve`` starts again; once it answers, the agent starts (the clock starts
   at its "running" event, when it is about to send) and drains: **stored** when the
   server holds every item, **normalised** when the worker has made a fleet reading of
   each.  Meanwhile the
   agent process is sampled with psutil (CPU, resident memory); afterwards it is
   sampled ``--idle-s`` seconds with nothing to send (**idle**);
4. the reference, as in :mod:`bench.server_ingest`: every row the pipeline wrote
   (raw batches and item keys of the agents app; devices, readings, counters,
   supplies, alerts, status, events, audit of the fleet app) is read back, the
   tables emptied, and the same rows inserted again with the driver directly
   (``sqlite3`` / ``psycopg``, ``executemany``, one transaction per received batch /
   per 500 readings), timed.  **ingest/raw** = raw time ÷ pipeline time (goal ≥ 50 %).

The per-agent and per-tenant request limits are raised for the runs (the default,
120 requests a minute of up to 500 readings, is above what one server ingests anyway;
the limiter is not what is measured).  Results: a Markdown table on stdout and in
``bench/out/agent-transport-<date>.md``, raw figures in ``….json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from .common import OUT_DIR, REPO, cores, dump_json, loadavg, machine

GOAL_RATIO = 0.5
DAILY = 86400
THREE_HOURLY = 3 * 3600


def log(msg: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    print(f"[agent-transport {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------


@dataclass
class Serve:
    """``fleetroom serve`` in its own session (stopped by its process group)."""

    env: dict[str, str]
    data_dir: Path
    web_port: int
    agents_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts_s: list[float] = field(default_factory=list)

    def start(self, timeout: float = 300) -> float:
        """Start and wait until the agents' listener answers ``/healthz``; seconds."""
        exe = Path(sys.executable).parent / "fleetroom"
        logf = (self.data_dir / "serve.log").open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--bind", f"127.0.0.1:{self.web_port}", "--web-workers", "1"],
            env=self.env, stdout=logf, stderr=logf, start_new_session=True)
        logf.close()
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))
        url = f"https://127.0.0.1:{self.agents_port}/healthz"
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleetroom serve exited; see {self.data_dir / 'serve.log'}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    self.starts_s.append(time.monotonic() - t0)
                    return self.starts_s[-1]
            time.sleep(0.3)
        raise RuntimeError(f"fleetroom serve did not answer on {url} within {timeout} s")

    def cpu_s(self) -> float:
        """CPU seconds of the serve process tree so far (live processes only)."""
        if self.proc is None:
            return 0.0
        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        return total

    def stop(self) -> None:
        """SIGTERM the group (the supervisor stops gunicorn and the worker), then wait."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group
        self.proc = None


class Sampler:
    """psutil samples of one process every ``every`` seconds, in a thread."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.rss: list[float] = []
        self._stop = threading.Event()
        t = self.proc.cpu_times()
        self.cpu0 = t.user + t.system
        self.t0 = time.monotonic()
        self.cpu1 = self.cpu0
        self.t1 = self.t0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.rss.append(self.proc.memory_info().rss / 2**20)
                t = self.proc.cpu_times()
                self.cpu1, self.t1 = t.user + t.system, time.monotonic()
            self._stop.wait(self.every)

    def stop(self) -> dict[str, float]:
        """CPU seconds, mean CPU % of one core, mean and peak RSS (MiB)."""
        self._stop.set()
        self._thread.join()
        cpu = self.cpu1 - self.cpu0
        wall = max(1e-9, self.t1 - self.t0)
        return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                "cpu_percent": round(100 * cpu / wall, 1),
                "rss_mean_mb": round(sum(self.rss) / len(self.rss), 1) if self.rss else 0.0,
                "rss_peak_mb": round(max(self.rss), 1) if self.rss else 0.0}


def _pg_admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{url.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute(sql)


# --- one run --------------------------------------------------------------------------


def run_one(backend: str, meter_read_s: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (backend, schedule) run; its figures."""
    from fleetroom_protocol.messages import Schedule

    from tests.support.chaos_agent import AgentHost
    from tests.support.chaos_readings import outage_reads
    from tests.support.chaos_server import ServerHost, free_port

    root = Path(tempfile.mkdtemp(prefix=f"fleetroom-bench-transport-{backend}-"))
    dbname = f"fleetroom_bench_transport_{os.getpid()}"
    db_url = None
    if backend == "postgres":
        _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{dbname}"')
        _pg_admin(args.pg_url, f'CREATE DATABASE "{dbname}"')
        db_url = f"{args.pg_url.rstrip('/')}/{dbname}"
    expected = args.devices * outage_reads(Schedule(meter_read_s=meter_read_s), args.hours)
    label = f"{backend}, {args.devices} devices, meter read every {meter_read_s // 3600} h"
    host = ServerHost(root, database_url=db_url)
    serve: Serve | None = None
    agent: AgentHost | None = None
    try:
        host.open()
        env = {**host.env, "FLEETROOM_WORKER_WORKERS": str(args.worker_threads)}
        serve = Serve(env, host.data_dir, free_port(), host.agents_port)
        log(f"{label}: starting fleetroom serve")
        serve.start()
        agent = AgentHost(root, "bench", log_level="warning")
        agent.enroll(host.url, host.token(), host.ca_file)
        serve.stop()  # the outage begins

        agent.start(fresh=True, max_items=500, backoff_cap=300.0)
        filled = agent.call("fill", timeout=3600, devices=args.devices,
                            meter_read_s=meter_read_s, hours=args.hours, chunk=100)
        before = agent.call("stats")
        assert agent.stop() == 0
        assert filled["stored"] == expected == before["items"], (filled, before["items"])
        log(f"{label}: {expected:,} readings ({before['bytes'] / 2**20:.1f} MiB) waiting")

        serve.start()  # the outage ends
        serve_cpu0 = serve.cpu_s()
        agent.start(fresh=True, max_items=500, backoff_cap=300.0)
        assert agent.proc is not None
        t0 = time.monotonic()  # the agent is up (its imports and start-up not counted)
        sampler = Sampler(agent.proc.pid)
        stored_s = normalised_s = None
        draining: dict[str, float] = {}
        deadline = t0 + args.timeout
        while normalised_s is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: not drained after {args.timeout} s: "
                                   f"{host.counts(agent.agent_id)}")
            time.sleep(0.25)
            counts = host.counts(agent.agent_id)
            now = time.monotonic() - t0
            if stored_s is None and counts["items"] >= expected:
                stored_s = now
                draining = sampler.stop()
            if counts["readings"] >= expected and counts["unprocessed"] == 0:
                normalised_s = now
        assert stored_s is not None
        serve_cpu = serve.cpu_s() - serve_cpu0
        agent.wait_drained(120)
        time.sleep(2.0)  # let the last acknowledgement and state write settle
        idle_sampler = Sampler(agent.proc.pid)
        time.sleep(args.idle_s)
        idle = idle_sampler.stop()
        assert agent.stop() == 0
        serve.stop()
        dump_counts = host.counts(agent.agent_id)
        log(f"{label}: stored in {stored_s:.1f} s, normalised in {normalised_s:.1f} s; "
            f"raw reference next")
        raw = raw_reference(env, batch=500)
        pipeline_rps = expected / normalised_s
        raw_rps = expected / raw["raw_s"]
        return {
            "backend": backend, "devices": args.devices, "hours": args.hours,
            "meter_read_s": meter_read_s, "readings": expected,
            "payload_mb": round(before["bytes"] / 2**20, 2),
            "batches": dump_counts["batches"], "stored_s": round(stored_s, 2),
            "normalised_s": round(normalised_s, 2),
            "stored_rps": expected / stored_s, "pipeline_rps": pipeline_rps,
            "raw": raw, "raw_rps": raw_rps, "ratio": raw["raw_s"] / normalised_s,
            "agent_draining": draining, "agent_idle": idle,
            "agent_cpu_ms_per_1000": round(1000 * draining["cpu_s"] / expected * 1000, 1),
            "server_cpu_s": round(serve_cpu, 1), "serve_start_s": serve.starts_s,
            "server_counts": dump_counts,
        }
    finally:
        if agent is not None:
            agent.close()
        if serve is not None:
            serve.stop()
        host.close()
        if backend == "postgres":
            _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{dbname}"')
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def raw_reference(env: dict[str, str], batch: int) -> dict[str, Any]:
    """:func:`child_raw` in a fresh process with the run's settings."""
    p = subprocess.run([sys.executable, "-m", "bench.agent_transport", "--child-raw",
                        "--batch", str(batch)], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=3600, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"raw reference failed:\n{p.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


# --- the raw reference (child) ------------------------------------------------------------

AGENT_TABLES = ("agents_receivedbatch", "agents_receiveditem")


def child_raw(batch: int) -> dict[str, Any]:
    """Read back the rows the pipeline wrote, empty the tables, insert them again with
    the driver directly; seconds taken (see the module doc)."""
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection, transaction

    from bench.server_ingest import FLEET_TABLES, _dump, _raw_sqlite_value, _reset, raw_insert

    vendor = connection.vendor
    fleet = _dump(connection)
    agents: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    with connection.cursor() as cur:
        for table in AGENT_TABLES:
            cur.execute(f"SELECT * FROM {table} ORDER BY id")
            agents[table] = ([c[0] for c in cur.description], [tuple(r) for r in cur.fetchall()])
        cur.execute("SELECT COUNT(*) FROM agents_agentgap")
        assert cur.fetchone()[0] == 0, "gap records would pin item keys"
    counts = {t: len(rows) for t, (_, rows) in {**fleet, **agents}.items()}
    with transaction.atomic(), connection.cursor() as cur:
        for table in reversed(AGENT_TABLES):
            cur.execute(f"DELETE FROM {table}")
    _reset(connection, vendor)
    connection.close()
    db = settings.DATABASES["default"]
    agents_s = _raw_agents(vendor, db, agents, _raw_sqlite_value)
    fleet_s = raw_insert(vendor, db, fleet, batch)
    connection.connect()
    with connection.cursor() as cur:
        for table, n in counts.items():
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            assert cur.fetchone()[0] == n, table
    return {"raw_s": round(agents_s + fleet_s, 3), "agents_s": round(agents_s, 3),
            "fleet_s": round(fleet_s, 3), "rows": sum(counts.values()), "tables": counts,
            "fleet_tables": list(FLEET_TABLES)}


def _raw_agents(vendor: str, db: dict[str, Any],
                rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]],
                sqlite_value: Any) -> float:
    """Raw batches and their item keys, one transaction per received batch (as the
    receive path commits them)."""
    if vendor == "postgresql":
        import psycopg

        conn: Any = psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"],
                                    port=db["PORT"] or 5432)
        mark = "%s"
    else:
        import sqlite3

        conn = sqlite3.connect(db["NAME"], isolation_level=None)
        conn.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                           "PRAGMA foreign_keys=ON;")
        mark = "?"

    def prep(data: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if vendor == "postgresql":
            return data
        return [tuple(sqlite_value(v) for v in r) for r in data]

    (bcols, brows), (icols, irows) = rows[AGENT_TABLES[0]], rows[AGENT_TABLES[1]]
    brows, irows = prep(brows), prep(irows)
    batch_at = icols.index("batch_id")
    items_of: dict[Any, list[tuple[Any, ...]]] = {}
    for r in irows:
        items_of.setdefault(r[batch_at], []).append(r)

    def sql(table: str, cols: list[str]) -> str:
        names = ", ".join(f'"{c}"' for c in cols)
        return f"INSERT INTO {table} ({names}) VALUES ({', '.join([mark] * len(cols))})"

    bsql, isql = sql(AGENT_TABLES[0], bcols), sql(AGENT_TABLES[1], icols)
    bid = bcols.index("id")
    t0 = time.perf_counter()
    cur = conn.cursor()
    for b in brows:
        if vendor != "postgresql":
            conn.execute("BEGIN IMMEDIATE")
        cur.execute(bsql, b)
        if items_of.get(b[bid]):
            cur.executemany(isql, items_of[b[bid]])
        if vendor == "postgresql":
            conn.commit()
        else:
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


# --- report ---------------------------------------------------------------------------


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Markdown tables of the figures."""
    lines = [
        f"# Agent → server transport ({meta['date']})",
        "",
        f"{meta['machine']['nproc']} cores ({meta['machine']['cpu_model']}), load "
        f"{meta['load_before']:.1f} before the run; HTTPS to `fleetroom serve` on 127.0.0.1; "
        f"a {meta['devices']:,}-device site, outage {meta['hours']:g} h.",
        "",
        "## Ingest over HTTPS (stored and normalised) vs. raw inserts of the same rows",
        "",
        "| backend | schedule | readings | batches | stored after | per batch "
        "| normalised after | pipeline readings/s | raw readings/s | pipeline/raw | goal ≥ 50 % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        verdict = "met" if r["ratio"] >= GOAL_RATIO else "**missed**"
        lines.append(
            f"| {r['backend']} | every {r['meter_read_s'] // 3600} h | {r['readings']:,} "
            f"| {r['batches']:,} | {r['stored_s']:.1f} s "
            f"| {1000 * r['stored_s'] / max(1, r['batches']):.0f} ms | {r['normalised_s']:.1f} s "
            f"| {r['pipeline_rps']:,.0f} | {r['raw_rps']:,.0f} | {100 * r['ratio']:.0f} % "
            f"| {verdict} |")
    lines += [
        "",
        "## Drain after the outage, and what the agent costs",
        "",
        "| backend | schedule | readings (MiB) | drain: on the server | drain: normalised "
        "| agent CPU draining | agent CPU ms / 1,000 readings | agent RSS draining (peak) "
        "| agent CPU idle | agent RSS idle | server CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        d, i = r["agent_draining"], r["agent_idle"]
        lines.append(
            f"| {r['backend']} | every {r['meter_read_s'] // 3600} h "
            f"| {r['readings']:,} ({r['payload_mb']:.1f}) | {r['stored_s']:.1f} s "
            f"| {r['normalised_s']:.1f} s | {d['cpu_percent']:.0f} % of a core "
            f"| {r['agent_cpu_ms_per_1000']:.0f} | {d['rss_mean_mb']:.0f} "
            f"({d['rss_peak_mb']:.0f}) MiB | {i['cpu_percent']:.1f} % "
            f"| {i['rss_mean_mb']:.0f} MiB | {r['server_cpu_s']:.0f} |")
    lines += [
        "",
        "Pipeline: agent outbox → sealed, gzipped batch → HTTPS (TLS 1.2+) → gunicorn → "
        "verify, replay window, store raw batch and item keys, acknowledge after commit → "
        "Huey worker → `ingest_readings`.  *Per batch*: stored after ÷ batches, the round "
        "trip of one batch (one agent sends one batch at a time; the next waits for the "
        "acknowledgement).  Raw: the same rows with `executemany`, one "
        "transaction per received batch and per 500 readings (final rows only: the "
        "pipeline's own updates — item states, batch and agent rows, rate-limit counters — "
        "have no counterpart there).  Agent figures are the agent "
        "process alone (psutil, sampled every 0.5 s); idle = nothing to send, "
        f"{meta['idle_s']:g} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; run every (backend, schedule) or the raw child."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--backends", default="sqlite,postgres", help="comma list of sqlite, postgres")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432",
                    help="PostgreSQL server (a throw-away database is created there)")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=72.0)
    ap.add_argument("--schedules", default=f"{THREE_HOURLY},{DAILY}",
                    help="meter read intervals in seconds (comma list)")
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--worker-threads", type=int, default=2,
                    help="Huey worker threads (the server's default)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--quick", action="store_true",
                    help="try-out: 100 devices, daily reads only, SQLite")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--child-raw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=500, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_raw:
        print(json.dumps(child_raw(args.batch)))
        return 0
    if args.quick:
        args.devices, args.schedules, args.backends = 100, str(DAILY), "sqlite"
    sys.path.insert(0, str(REPO))  # tests.support.* (the agent driver and server helpers)
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "cores": cores(), "load_before": loadavg(), "devices": args.devices,
            "hours": args.hours, "idle_s": args.idle_s}
    results = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for interval in [int(s) for s in args.schedules.split(",") if s.strip()]:
            results.append(run_one(backend, interval, args))
            r = results[-1]
            log(f"{backend}, every {interval // 3600} h: {r['pipeline_rps']:,.0f} readings/s "
                f"(raw {r['raw_rps']:,.0f}, {100 * r['ratio']:.0f} %)")
    meta["load_after"] = loadavg()
    report = render(results, meta)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (args.out / f"agent-transport-{stamp}.md").write_text(report + "\n")
    dump_json(args.out / f"agent-transport-{stamp}.json", {"meta": meta, "results": results})
    log(f"written to {args.out}/agent-transport-{stamp}.{{md,json}}")
    return 0 if all(math.isfinite(r["ratio"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

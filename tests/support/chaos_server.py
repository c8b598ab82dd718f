"""A Fleetroom server the chaos tests can kill -9 and bring back in a fraction of a second.

``fleetroom serve`` migrates and collects static files before it starts gunicorn and
the Huey consumer, which takes 5–30 s on a loaded two-core machine; fifty kill cycles
would spend the CI budget on start-ups.  So the tests talk to a *zygote*: this module
run as ``python -m tests.support.chaos_server``.  It configures Django once (same
settings, same data directory, same TLS files as ``fleetroom serve``), migrates once,
and then, on command, forks

* **web**: gunicorn with exactly the command line ``fleetroom serve`` gives the agents'
  listener (``fleetroom.wsgi:application``, ``python:fleetroom.gunicorn_conf``,
  4 threads, 2 workers, TLS certificate and key), and
* **worker**: the Huey consumer (``run_huey``, as ``fleetroom worker``),

each in its own session, so ``kill`` sends SIGKILL to the whole process group — the
arbiter and its workers die mid-request, as in a power cut of that process (the
database files stay; SQLite and PostgreSQL recover by themselves).  Forked children
are real processes with real sockets; only the Python imports are shared.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout
(``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``).  Commands: ``token``,
``start``, ``kill``, ``stop``, ``sweep``, ``counts``, ``dump``, ``quit``.
:class:`ServerHost` is the test side.

The zygote never holds a database connection while it forks (each command closes
them), and it is a child subreaper, so the gunicorn workers orphaned by a kill are
reaped here instead of lingering as zombies.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
EXE: Final = Path(sys.executable).parent
SITE_PATH: Final = "Chaos/Dealer/Customer/Site"
_PR_SET_PDEATHSIG: Final = 1
_PR_SET_CHILD_SUBREAPER: Final = 36


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value)


def server_env(data_dir: Path, agents_port: int, *, database_url: str | None = None,
               agent_rate: str = "100000/m") -> dict[str, str]:
    """The environment ``fleetroom`` commands get (FLEETROOM_* of the caller removed).

    The per-agent and per-tenant rate limits are raised: the kill cycles and the
    benchmark send many small batches a second on purpose, and the limiter is not
    what they measure (its own tests are in server/tests/test_agents_*.py).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}
    tls = data_dir / "tls"
    env |= {"FLEETROOM_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "fleetroom.settings",
            "FLEETROOM_TLS_CERT": str(tls / "server.pem"),
            "FLEETROOM_TLS_KEY": str(tls / "server.key"),
            "FLEETROOM_AGENTS_BIND": f"127.0.0.1:{agents_port}",
            "FLEETROOM_AGENTS_AGENT_RATE": agent_rate,
            "FLEETROOM_AGENTS_TENANT_RATE": agent_rate}
    if database_url:
        env["FLEETROOM_DATABASE_URL"] = database_url
    return env


# --- the zygote (runs in its own process) -----------------------------------------------


class Zygote:
    """Django configured once; web and worker forked on demand."""

    def __init__(self, data_dir: Path, agents_bind: str) -> None:
        self.data_dir = data_dir
        self.agents_bind = agents_bind
        self.children: dict[str, int] = {}
        self.log_dir = data_dir / "logs"
        self.log_dir.mkdir(exist_ok=True)

    # -- set-up

    def setup(self) -> dict[str, Any]:
        """Configure Django, migrate, make the tenant tree; warm the WSGI app."""
        import django

        django.setup()
        from django.core.management import call_command
        from fleetroom.core.scoping import SYSTEM
        from fleetroom.tenancy.models import Tenant
        from fleetroom.tenancy.services import do_create_tenant

        t0 = time.monotonic()
        call_command("migrate", interactive=False, verbosity=0)
        migrate_s = time.monotonic() - t0
        if not Tenant.objects.filter(name="Chaos", parent=None).exists():
            op = do_create_tenant(None, "operator", "Chaos", SYSTEM)
            dealer = do_create_tenant(op, "dealer", "Dealer", SYSTEM)
            customer = do_create_tenant(dealer, "customer", "Customer", SYSTEM)
            do_create_tenant(customer, "site", "Site", SYSTEM)
        import fleetroom.wsgi  # noqa: F401  (imported once, shared by every fork)
        from fleetroom.agents.keys import server_keys

        server_keys()  # created now, not by two gunicorn workers racing at first request
        self._close_db()
        return {"migrate_s": round(migrate_s, 2)}

    @staticmethod
    def _close_db() -> None:
        from django.db import connections

        connections.close_all()

    # -- children

    def _fork(self, name: str, run: Any) -> int:
        self._close_db()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        try:  # the child: never returns into the command loop
            os.setsid()
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            log = os.open(self.log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                          0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            run()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                print(f"{name} ended: {exc!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(0)
        return 0  # unreachable

    def _run_web(self) -> None:
        from gunicorn.app.wsgiapp import WSGIApplication  # type: ignore[import-untyped]

        tls = self.data_dir / "tls"
        # The agents' listener exactly as ``fleetroom serve`` starts it.
        sys.argv = [str(EXE / "gunicorn"), "fleetroom.wsgi:application",
                    "--config", "python:fleetroom.gunicorn_conf", "--threads", "4",
                    "--graceful-timeout", "10", "--bind", self.agents_bind, "--workers", "2",
                    "--certfile", str(tls / "server.pem"), "--keyfile", str(tls / "server.key")]
        WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn").run()

    @staticmethod
    def _run_worker() -> None:
        from django.core.management import call_command

        call_command("run_huey")

    def _listening(self, timeout: float) -> float:
        host, port = self.agents_bind.rsplit(":", 1)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
                return time.monotonic() - t0
            time.sleep(0.02)
        raise TimeoutError(f"nothing listens on {self.agents_bind} after {timeout} s")

    def start(self, what: str) -> dict[str, Any]:
        """Fork ``web`` and/or ``worker`` (those not running); wait for the listener."""
        names = ["web", "worker"] if what == "all" else [what]
        for name in names:
            if name in self.children:
                continue
            self.children[name] = self._fork(
                name, self._run_web if name == "web" else self._run_worker)
        ready = self._listening(60) if "web" in names else 0.0
        return {"pids": dict(self.children), "ready_s": round(ready, 3)}

    def kill(self, what: str, sig: int = signal.SIGKILL) -> dict[str, Any]:
        """Signal the process groups of ``what`` and reap them."""
        names = ["web", "worker"] if what == "all" else [what]
        killed = {}
        for name in names:
            pid = self.children.pop(name, None)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            if sig != signal.SIGKILL:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done:
                        break
                    time.sleep(0.05)
                else:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            with contextlib.suppress(ProcessLookupError):  # stragglers of the group
                os.killpg(pid, signal.SIGKILL)
            killed[name] = pid
        self._reap()
        return {"killed": killed}

    @staticmethod
    def _reap() -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    # -- the database

    def token(self) -> dict[str, Any]:
        """A one-use enrollment token for the site."""
        from fleetroom.agents.services import do_create_enrollment_token
        from fleetroom.core.scoping import SYSTEM
        from fleetroom.tenancy.models import Tenant

        site = Tenant.objects.get(name="Site", parent__name="Customer")
        _, clear = do_create_enrollment_token(site, acting_user=SYSTEM, label="chaos")
        return {"token": clear}

    @staticmethod
    def sweep() -> dict[str, Any]:
        """What the periodic ``sweep_pending_batches`` task does, without its one-minute
        grace: normalise every stored batch whose queued task was lost in a kill."""
        from fleetroom.agents.processing import do_process_pending

        total = 0
        while True:
            n = do_process_pending(older_than=timedelta(0), limit=500)
            total += n
            if n == 0:
                return {"processed": total}

    @staticmethod
    def counts(agent: str) -> dict[str, Any]:
        """Progress figures for one agent (cheap: counts only)."""
        from fleetroom.agents.models import (
            Agent,
            AgentGap,
            ItemState,
            ReceivedBatch,
            ReceivedItem,
        )
        from fleetroom.fleet.models import Reading

        a = Agent.objects.filter(public_id=agent).first()
        if a is None:
            return {"items": 0, "pending": 0, "batches": 0, "unprocessed": 0, "readings": 0,
                    "gaps": 0}
        return {
            "items": ReceivedItem.objects.filter(agent=a).count(),
            "pending": ReceivedItem.objects.filter(agent=a, state=ItemState.PENDING).count(),
            "batches": ReceivedBatch.objects.filter(agent=a).count(),
            "unprocessed": ReceivedBatch.objects.filter(agent=a, processed_at__isnull=True)
            .count(),
            "readings": Reading.objects.filter(agent_id=a.pk).count(),
            "gaps": AgentGap.objects.filter(agent=a).count(),
            "status": a.status, "violations": a.policy_violations,
        }

    @staticmethod
    def dump(agent: str, path: str) -> dict[str, Any]:
        """Everything the server holds from one agent, with canonical payload hashes, to
        ``path`` (JSON): the ground truth's other half."""
        from fleetroom.agents.models import Agent, AgentGap, ReceivedBatch, ReceivedItem
        from fleetroom.agents.processing import batch_body
        from fleetroom.fleet.models import Reading

        from tests.support.chaos_readings import payload_hash

        a = Agent.objects.get(public_id=agent)
        rows = list(ReceivedItem.objects.filter(agent=a).order_by("pk").values(
            "pk", "store", "stream", "seq", "batch_id", "state", "error", "priority"))
        by_batch: dict[int, dict[tuple[str, str, int], str]] = {}
        batches = []
        for batch in ReceivedBatch.objects.filter(agent=a).order_by("pk").iterator():
            body = batch_body(batch)
            by_batch[batch.pk] = {(i.store, i.stream, i.seq): payload_hash(i.payload)
                                  for i in body.items}
            batches.append({"pk": batch.pk, "items": batch.item_count, "new": batch.new_items,
                            "received_at": batch.received_at.isoformat(),
                            "processed_at": batch.processed_at.isoformat()
                            if batch.processed_at else None})
        items = []
        for r in rows:
            sha = by_batch.get(r["batch_id"] or -1, {}).get((r["store"], r["stream"], r["seq"]))
            items.append({**r, "sha256": sha})
        readings = []
        for reading in Reading.objects.filter(agent_id=a.pk).select_related("device").iterator():
            data = json.loads(zlib.decompress(bytes(reading.payload)))
            readings.append({"serial": reading.device.serial,
                             "taken_at": reading.taken_at.isoformat(),
                             "sha256": payload_hash(data)})
        gaps = [{**g, "store": g["item__store"]} for g in AgentGap.objects.filter(
            agent=a).order_by("pk").values("stream", "reason", "count", "ranges", "supersedes",
                                           "detail", "item__store")]
        doc = {"agent": {"status": a.status, "violations": a.policy_violations,
                         "last_violation": a.last_violation, "last_state": a.last_state},
               "items": items, "readings": readings, "gaps": gaps,
               "batches": batches}
        Path(path).write_text(json.dumps(doc, default=str))
        return {"items": len(items), "readings": len(readings), "gaps": len(gaps)}

    # -- the loop

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One command."""
        cmd = msg.get("cmd")
        try:
            if cmd == "start":
                return self.start(msg.get("what", "all"))
            if cmd == "kill":
                return self.kill(msg.get("what", "all"))
            if cmd == "stop":
                return self.kill(msg.get("what", "all"), signal.SIGTERM)
            if cmd == "token":
                return self.token()
            if cmd == "sweep":
                return self.sweep()
            if cmd == "counts":
                return self.counts(msg["agent"])
            if cmd == "dump":
                return self.dump(msg["agent"], msg["path"])
            raise ValueError(f"unknown command {cmd!r}")
        finally:
            self._close_db()


def zygote_main() -> int:
    """``python -m tests.support.chaos_server``: the command loop on stdin/stdout."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    data_dir = Path(os.environ["FLEETROOM_DATA_DIR"])
    zygote = Zygote(data_dir, os.environ["FLEETROOM_AGENTS_BIND"])
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints (migrations, gunicorn) must not hit the protocol

    def reply(doc: dict[str, Any]) -> None:
        out.write(json.dumps(doc, default=str) + "\n")
        out.flush()

    def leave(*_: object) -> None:
        zygote.kill("all")
        os._exit(0)

    signal.signal(signal.SIGTERM, leave)
    try:
        reply({"ok": True, **zygote.setup()})
    except Exception as exc:
        reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if msg.get("cmd") == "quit":
            break
        try:
            reply({"ok": True, **zygote.handle(msg)})
        except Exception as exc:
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    zygote.kill("all", signal.SIGTERM)
    return 0


# --- the test side ----------------------------------------------------------------------


class ServerError(RuntimeError):
    """The zygote answered ``ok: false`` or did not answer."""


@dataclass
class ServerHost:
    """A data directory, its TLS files, and the zygote that runs the server from it."""

    root: Path
    database_url: str | None = None
    agents_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    _answers: queue.Queue[str] = field(default_factory=queue.Queue)
    setup_figures: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        return self.root / "server"

    @property
    def url(self) -> str:
        """What agents enroll with."""
        return f"https://127.0.0.1:{self.agents_port}"

    @property
    def ca_file(self) -> Path:
        """The private CA agents must trust."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def env(self) -> dict[str, str]:
        """The environment of every server process."""
        return server_env(self.data_dir, self.agents_port, database_url=self.database_url)

    def open(self, timeout: float = 300) -> ServerHost:
        """``fleetroom init``, ``tls-selfsigned``, then the zygote (migrated, tree made)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.env
        subprocess.run([EXE / "fleetroom", "init"], env=env, check=True, capture_output=True)
        subprocess.run([EXE / "fleetroom", "tls-selfsigned", "127.0.0.1", "localhost"],
                       env=env, check=True, capture_output=True)
        log = (self.data_dir / "zygote.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.chaos_server"], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            start_new_session=True)
        log.close()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        self.setup_figures = self._answer(timeout)
        return self

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._answers.put(line)
        self._answers.put("")

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise ServerError(f"the server zygote did not answer within {timeout} s; see "
                              f"{self.data_dir / 'zygote.log'}") from None
        if not line:
            raise ServerError(f"the server zygote exited; see {self.data_dir / 'zygote.log'}")
        doc: dict[str, Any] = json.loads(line)
        if not doc.pop("ok"):
            raise ServerError(str(doc.get("error")))
        return doc

    def call(self, cmd: str, timeout: float = 120, **args: Any) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def start(self) -> float:
        """Web and worker up; seconds until the listener accepted connections."""
        return float(self.call("start")["ready_s"])

    def kill(self, what: str = "all") -> None:
        """SIGKILL the process groups (``web``, ``worker`` or ``all``)."""
        self.call("kill", what=what)

    def stop(self) -> None:
        """SIGTERM (graceful) and wait."""
        self.call("stop")

    def token(self) -> str:
        """A fresh enrollment token."""
        return str(self.call("token")["token"])

    def counts(self, agent: str) -> dict[str, Any]:
        """Item, batch and reading counts for ``agent``."""
        return self.call("counts", agent=agent)

    def dump(self, agent: str) -> dict[str, Any]:
        """Everything the server holds from ``agent`` (see :meth:`Zygote.dump`)."""
        path = self.root / f"dump-{agent}-{secrets.token_hex(3)}.json"
        self.call("dump", timeout=600, agent=agent, path=str(path))
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def sweep(self) -> int:
        """Normalise batches whose queued task a kill lost; how many."""
        return int(self.call("sweep", timeout=600)["processed"])

    def wait_processed(self, agent: str, timeout: float = 180) -> dict[str, Any]:
        """Until every batch of ``agent`` is normalised.  A batch whose queued task died
        with a killed worker is what the periodic sweep is for; after a few seconds
        without progress the sweep is run at once instead of waiting its two minutes."""
        deadline = time.monotonic() + timeout
        counts = self.counts(agent)
        last, still = counts["unprocessed"], time.monotonic()
        while counts["unprocessed"] or counts["pending"]:
            if time.monotonic() > deadline:
                raise ServerError(f"batches still unprocessed after {timeout} s: {counts}")
            time.sleep(0.3)
            counts = self.counts(agent)
            if counts["unprocessed"] < last:
                last, still = counts["unprocessed"], time.monotonic()
            elif time.monotonic() - still > 5:
                self.sweep()
                still = time.monotonic()
        return counts

    def close(self) -> None:
        """Stop everything the zygote started, then the zygote."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            self.call("quit", timeout=1)
        with contextlib.suppress(ServerError, OSError, ValueError, BrokenPipeError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> ServerHost:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(zygote_main())

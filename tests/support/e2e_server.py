"""The real Fleetroom server for the end-to-end tests, as an operator would run it.

:class:`FleetroomServer` drives only the ``fleetroom`` command: ``init``,
``tls-selfsigned 127.0.0.1 localhost`` (a private CA; agents get ``--ca-file``),
then ``fleetroom serve`` with HTTPS on a free loopback port.  ``serve`` migrates
the database and supervises its children: gunicorn, the Huey worker (which
normalises received batches), and — when configured through the environment —
``fleetroom mqtt-bridge`` (to a private Mosquitto) and ``fleetroom mail-intake``
(the aiosmtpd receiver with STARTTLS, on another free port).

``serve`` runs in its own session (process group).  :meth:`stop` sends it SIGTERM
(it stops its children) and, should anything survive, kills that group — the
group this class created, nothing else.

Tests read the server's SQLite database directly, read-only (:meth:`query`):
what the server *stored* is the thing under test, and a second code path (the
ORM, the API) between the test and the rows would only hide it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.mosquitto import Mosquitto
from tests.support.processes import stop_process

BIN = Path(sys.executable).parent
FLEETROOM = str(BIN / "fleetroom")
MAIL_INTAKE_ADDRESS = "fleetroom-intake@e2e.fleetroom.test"


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """The caller's environment without any ``FLEETROOM_*`` setting (a developer's
    shell or another test must not leak a database URL or a data directory in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}


def run_command(argv: Sequence[str], env: dict[str, str], *, timeout: float,
                error: type[Exception], what: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion; ``error`` with its output tails if it exits non-zero."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise error(f"{what} exited {proc.returncode}:\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


class ServerError(RuntimeError):
    """The server did not come up, or a ``fleetroom`` command failed."""


class FleetroomServer:
    """One ``fleetroom serve`` with its own data directory (see the module doc)."""

    def __init__(self, base: Path, *, broker: Mosquitto | None = None,
                 mail_intake: bool = False) -> None:
        self.base = base
        self.data_dir = base / "server"
        self.port = free_tcp_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.smtp_port = free_tcp_port() if mail_intake else None
        self.broker = broker
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = clean_environment() | {
            "FLEETROOM_DATA_DIR": str(self.data_dir),
            "DJANGO_SETTINGS_MODULE": "fleetroom.settings",
            "FLEETROOM_BASE_URL": self.url,
        }

    # --- files and commands -----------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The private CA agents must trust (``fleetroom-agent enroll --ca-file``)."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def database(self) -> Path:
        return self.data_dir / "fleetroom.sqlite3"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``fleetroom ARGS`` with this server's environment; :class:`ServerError` on failure."""
        return run_command([FLEETROOM, *args], self.env, timeout=timeout, error=ServerError,
                           what=f"fleetroom {' '.join(args)}")

    def manage_python(self, code: str, timeout: float = 120) -> Any:
        """Run ``code`` in ``fleetroom manage shell`` (the server's own Django and
        services); the JSON it prints on its last line is returned."""
        out = self.run("manage", "shell", "--no-imports", "-c", code, timeout=timeout).stdout
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if not lines:
            raise ServerError(f"no output from the shell code:\n{code}")
        return json.loads(lines[-1])

    def enrollment_token(self, tenant_id: int, *, uses: int = 1) -> str:
        """A token made by ``fleetroom manage agent_token`` (shown once, stored hashed)."""
        out = self.run("manage", "agent_token", "--tenant", str(tenant_id), "--uses",
                       str(uses), "--json").stdout
        return str(json.loads(out.strip().splitlines()[-1])["token"])

    def create_sites(self, names: Sequence[str], *,
                     second_dealer: Sequence[str] = ()) -> dict[str, int]:
        """A customer with one site per name under a fresh operator and dealer (the
        names in ``second_dealer`` under a second dealer), through the tenancy
        services; returns site name → tenant id."""
        code = f"""
import json
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.models import TenantKind
from fleetroom.tenancy.services import do_create_tenant
operator = do_create_tenant(None, TenantKind.OPERATOR, "E2E Operator", SYSTEM)
dealer = do_create_tenant(operator, TenantKind.DEALER, "E2E Dealer", SYSTEM)
second = do_create_tenant(operator, TenantKind.DEALER, "E2E Second Dealer", SYSTEM)
out = {{}}
for name in {list(names)!r}:
    parent = second if name in {list(second_dealer)!r} else dealer
    customer = do_create_tenant(parent, TenantKind.CUSTOMER, "Customer " + name, SYSTEM)
    out[name] = do_create_tenant(customer, TenantKind.SITE, "Site " + name, SYSTEM).pk
print(json.dumps(out))
"""
        return {k: int(v) for k, v in self.manage_python(code).items()}

    # --- life cycle -------------------------------------------------------------------

    def _configure(self) -> None:
        self.run("init")
        self.run("tls-selfsigned", "127.0.0.1", "localhost")
        tls = self.data_dir / "tls"
        self.env |= {"FLEETROOM_TLS_CERT": str(tls / "server.pem"),
                     "FLEETROOM_TLS_KEY": str(tls / "server.key")}
        if self.smtp_port is not None:
            self.env |= {"FLEETROOM_MAIL_INTAKE_ADDRESS": MAIL_INTAKE_ADDRESS,
                         "FLEETROOM_MAIL_INTAKE_LISTEN": f"127.0.0.1:{self.smtp_port}",
                         "FLEETROOM_MAIL_INTAKE_HOSTNAME": "localhost"}
        if self.broker is not None:
            self.env |= {"FLEETROOM_MQTT_URL": self.broker.mqtts_url,
                         "FLEETROOM_MQTT_CA_FILE": str(self.broker.ca_file),
                         "FLEETROOM_MQTT_BRIDGE_PASSWORD": "e2e-bridge-password-1",
                         "FLEETROOM_MQTT_ADMIN_USERNAME": self.broker.admin_username,
                         "FLEETROOM_MQTT_ADMIN_PASSWORD": self.broker.admin_password}

    def start(self, timeout: float = 180) -> FleetroomServer:
        """Configure, start ``serve`` and wait for HTTPS (and the SMTP receiver)."""
        self.base.mkdir(parents=True, exist_ok=True)
        self._configure()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [FLEETROOM, "serve", "--bind", f"127.0.0.1:{self.port}", "--web-workers", "1"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        healthy = False
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(f"fleetroom serve exited {self.proc.returncode}:\n"
                                  f"{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise ServerError(f"the server did not come up:\n{self.log()[-4000:]}")
            if not healthy:
                try:
                    with urllib.request.urlopen(f"{self.url}/healthz", context=ctx,
                                                timeout=3) as resp:
                        healthy = resp.status == 200
                except OSError:
                    pass
            if healthy and self._smtp_ready():
                return
            time.sleep(0.3)

    def _smtp_ready(self) -> bool:
        if self.smtp_port is None:
            return True
        try:
            with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=2) as s:
                return s.recv(3) == b"220"
        except OSError:
            return False

    def log(self) -> str:
        """Everything ``serve`` and its children wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to ``serve`` (it stops its children); then its process group is killed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc, grace_s=30)
        # Children that outlived their supervisor (a crash, a stuck worker).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> FleetroomServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the database -----------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows from the server's database, opened read-only."""
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return list(conn.execute(sql, tuple(params)))
        finally:
            conn.close()

    def wait_for(self, sql: str, params: Sequence[Any], predicate: Any, *, timeout: float,
                 what: str, interval: float = 0.25) -> list[sqlite3.Row]:
        """Poll ``sql`` until ``predicate(rows)`` holds; :class:`AssertionError` after
        ``timeout`` seconds, naming ``what`` and the last rows seen."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query(sql, params)
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"last rows: {[dict(r) for r in rows][:20]}")
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"the server exited while waiting for {what}:\n"
                                  f"{self.log()[-4000:]}")
            time.sleep(interval)

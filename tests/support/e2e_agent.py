"""The real agent for the end-to-end tests, driven through ``fleetroom-agent`` only.

:class:`AgentProcess` writes an ``agent.toml`` (scan targets, a v2c credential,
the transport order, the status-poll ceiling), enrolls with
``fleetroom-agent enroll --server … --token … --ca-file …``, runs
``fleetroom-agent run`` as a child process and reads ``fleetroom-agent status
--json`` — exactly what a technician does on site.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.e2e_server import clean_environment, free_tcp_port, run_command
from tests.support.processes import stop_process

BIN = Path(sys.executable).parent
AGENT = str(BIN / "fleetroom-agent")


class AgentError(RuntimeError):
    """A ``fleetroom-agent`` command failed."""


def toml_list(values: Sequence[str]) -> str:
    """A TOML array of strings (``json.dumps`` writes valid TOML basic strings)."""
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


class AgentProcess:
    """One agent with its own data directory and config file."""

    def __init__(self, base: Path, name: str, *, targets: Sequence[str],
                 transports: Sequence[str] = ("https",), status_poll_s: int | None = None,
                 email: dict[str, Any] | None = None, extra_toml: str = "") -> None:
        self.base = base / name
        self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base / "data"
        self.config = self.base / "agent.toml"
        self.log_path = self.base / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = clean_environment()
        lines = [f"data_dir = {json.dumps(str(self.data_dir))}", "log_level = \"info\"", "",
                 "[scan]", f"targets = {toml_list(targets)}", "timeout_s = 1.0", "retries = 1",
                 "", "[[credentials]]", 'name = "site-v2c"', 'version = "2c"',
                 'community = "public"', "",
                 "[transports]", f"order = {toml_list(transports)}", ""]
        if email is not None:
            lines += ["[transports.email]",
                      *(f"{k} = {json.dumps(v)}" for k, v in email.items()), ""]
        if status_poll_s is not None:
            lines += ["[schedule]", f"max_status_poll_s = {status_poll_s}", ""]
        # The status page stays on (it is part of the product), on a free port.
        lines += ["[status_page]", f"port = {free_tcp_port()}", "", extra_toml]
        self.config.write_text("\n".join(lines), encoding="utf-8")
        self.config.chmod(0o600)
        self.agent_id: str | None = None

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_command([AGENT, *args], self.env, timeout=timeout, error=AgentError,
                           what=f"fleetroom-agent {args[0]}")

    def enroll(self, server_url: str, token: str, ca_file: Path) -> str:
        """``fleetroom-agent enroll``; returns the agent id the server gave."""
        self._run("enroll", "--server", server_url, "--token", token, "--data-dir",
                  str(self.data_dir), "--ca-file", str(ca_file))
        identity = json.loads((self.data_dir / "identity.json").read_text())
        self.agent_id = str(identity["agent_id"])
        return self.agent_id

    def identity(self) -> dict[str, Any]:
        """The stored identity file (public parts are what tests look at)."""
        data: dict[str, Any] = json.loads((self.data_dir / "identity.json").read_text())
        return data

    def start(self) -> AgentProcess:
        """``fleetroom-agent run --config agent.toml`` in the background."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [AGENT, "run", "--config", str(self.config)], env=self.env, stdout=log,
                stderr=subprocess.STDOUT)
        return self

    def status(self) -> dict[str, Any]:
        """``fleetroom-agent status --json``."""
        out = self._run("status", "--json", "--config", str(self.config)).stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def wait_status(self, predicate: Any, *, timeout: float, what: str) -> dict[str, Any]:
        """Poll ``status --json`` until ``predicate(doc)``."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            doc = self.status()
            if predicate(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"agent: timed out after {timeout} s waiting for {what}; "
                                     f"status: {json.dumps(doc, default=str)[:3000]}")
            time.sleep(0.5)

    def check_alive(self) -> None:
        """:class:`AgentError` with the log if ``run`` exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AgentError(f"fleetroom-agent run exited {self.proc.returncode}:\n"
                             f"{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (the agent closes its outbox and writes its state); kill if stuck."""
        proc, self.proc = self.proc, None
        stop_process(proc, grace_s=30)

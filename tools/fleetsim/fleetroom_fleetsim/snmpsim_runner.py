"""Run snmpsim as a child process serving a directory of .snmprec recordings.

snmpsim refuses to run as root, needs its own cache directory per process, and
must be able to read its Python (a venv over a Python under /root fails with a
misleading "no dbm clone found"), so this wrapper handles those once for every
test, the demo and the benchmarks.  Community (v1/v2c) and v3 context name are the
recording's file stem.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


@dataclass(frozen=True, slots=True)
class V3User:
    """A USM user the simulator accepts (snmpsim protocol names: SHA256, AES256, …)."""

    name: str
    auth_proto: str = "NONE"
    auth_key: str | None = None
    priv_proto: str = "NONE"
    priv_key: str | None = None

    def args(self) -> list[str]:
        out = [f"--v3-user={self.name}"]
        if self.auth_key:
            out += [f"--v3-auth-key={self.auth_key}", f"--v3-auth-proto={self.auth_proto}"]
        if self.priv_key:
            out += [f"--v3-priv-key={self.priv_key}", f"--v3-priv-proto={self.priv_proto}"]
        return out


def _process_user_args() -> list[str]:
    if os.geteuid() != 0:
        return []
    group = "nogroup"
    try:
        import grp

        grp.getgrnam(group)
    except KeyError:
        group = "nobody"
    return ["--process-user=nobody", f"--process-group={group}"]


def _responder() -> str:
    exe = Path(sys.executable).parent / "snmpsim-command-responder"
    if exe.exists():
        return str(exe)
    found = shutil.which("snmpsim-command-responder")
    if not found:
        raise RuntimeError("snmpsim-command-responder not found; run `uv sync`")
    return found


def responder_command() -> list[str]:
    """``snmpsim-command-responder`` with the options to drop root, as every caller
    starts it (add ``--cache-dir``, ``--data-dir`` and the endpoint)."""
    return [_responder(), *_process_user_args()]


@dataclass
class SnmpSimulator:
    """snmpsim on ``host:port`` serving ``data_dirs``.  Use as a context manager."""

    data_dirs: list[Path]
    host: str = "127.0.0.1"
    port: int = 0
    v3_users: list[V3User] = field(default_factory=list)
    startup_timeout: float = 60.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)

    def start(self) -> SnmpSimulator:
        """Start the simulator and wait until it listens."""
        if self.port == 0:
            self.port = free_udp_port(self.host)
        self._workdir = Path(tempfile.mkdtemp(prefix="fleetsim-"))
        cache = self._workdir / "cache"
        cache.mkdir()
        # snmpsim drops to 'nobody' before it writes its index files.
        os.chmod(self._workdir, 0o755)  # noqa: S103
        os.chmod(cache, 0o777)  # noqa: S103
        log = self._workdir / "snmpsim.log"
        endpoint = (f"[{self.host}]:{self.port}" if ":" in self.host
                    else f"{self.host}:{self.port}")
        endpoint_flag = "--agent-udpv6-endpoint" if ":" in self.host else "--agent-udpv4-endpoint"
        cmd = [*responder_command(), f"--cache-dir={cache}",
               "--log-level=error", "--v3-engine-id=auto"]
        cmd += [f"--data-dir={d}" for d in self._stage_data()]
        for u in self.v3_users:
            cmd += u.args()
        cmd += [f"{endpoint_flag}={endpoint}"]
        with log.open("wb") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "Listening at" in text:
                self._warm_up(deadline)
                return self
            if self._proc.poll() is not None:
                raise RuntimeError(f"snmpsim exited ({self._proc.returncode}):\n{text[-3000:]}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"snmpsim did not start within {self.startup_timeout}s")

    def _warm_up(self, deadline: float) -> None:
        """Wait for a real answer: snmpsim loads a recording's index lazily, so the
        first request after start can take seconds and would look like a timeout."""
        stems = [p.stem for d in self.data_dirs for p in sorted(Path(d).glob("*.snmprec"))]
        if not stems:
            return
        packet = sysdescr_get_packet(stems[0])
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            while time.monotonic() < deadline:
                s.sendto(packet, (self.host, self.port))
                try:
                    s.recvfrom(65535)
                    return
                except TimeoutError:
                    continue
        raise RuntimeError("snmpsim listens but does not answer")

    def _stage_data(self) -> list[Path]:
        """Copy the recordings where the unprivileged simulator can read them.

        snmpsim drops to 'nobody'; test temp dirs (e.g. /tmp/pytest-of-root) are
        private to root, so reading them in place fails with no clear error.
        """
        assert self._workdir is not None
        staged = []
        for i, d in enumerate(self.data_dirs):
            dest = self._workdir / f"data{i}"
            shutil.copytree(d, dest, ignore=shutil.ignore_patterns("*.md", "*.tsv", "*.txt"))
            for p in [dest, *dest.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
            staged.append(dest)
        return staged

    def stop(self) -> None:
        """Stop the simulator and remove its working files."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    @property
    def running(self) -> bool:
        """True while the simulator process is alive (a long-running ``serve`` polls it)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def endpoint(self) -> str:
        """``host:port`` as the agent's command line takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __enter__(self) -> SnmpSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def sysdescr_get_packet(community: str) -> bytes:
    """A v2c GET of sysDescr.0, encoded with pysnmp's protocol models (a readiness probe)."""
    from pyasn1.codec.ber import encoder
    from pysnmp.proto import api

    mod = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    pdu = mod.GetRequestPDU()
    mod.apiPDU.set_defaults(pdu)
    mod.apiPDU.set_varbinds(pdu, [(mod.ObjectIdentifier((1, 3, 6, 1, 2, 1, 1, 1, 0)),
                                   mod.Null(""))])
    msg = mod.Message()
    mod.apiMessage.set_defaults(msg)
    mod.apiMessage.set_community(msg, community)
    mod.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing listens on right now (small race accepted in tests)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

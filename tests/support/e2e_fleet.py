"""A small simulated printer fleet for the end-to-end tests: snmpsim, one address each.

Every device gets its own loopback address (``127.a.b.1``, ``127.a.b.2`` …, the
whole of 127/8 is loopback on Linux) and a free UDP port, so the agent sees
separate machines: a device without a serial number is identified by its IP on
the server, and two of them behind one address would be one device there.

Each device is one ``snmpsim-command-responder`` serving one recording as
``public.snmprec`` (community ``public``).  One process could serve several
endpoints, but snmpsim then tells them apart only by SNMPv3 context or by a
community that contains the transport id (``public/1.3.6.1.6.1.1.<n>``), which no
real site has.  The processes are started together and waited for together, so
a fleet of five is ready in about the time of one.

:meth:`SimFleet.swap` changes a device's state while everything runs: it replaces
the served file atomically with a newer modification time, and snmpsim re-indexes
a data file whose time changed at the next request (the same technique as
``agent/tests/test_runtime_collector.py``).  That is how the alert-latency test
makes a printer jam.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fleetroom_fleetsim.snmpsim_runner import (
    free_udp_port,
    responder_command,
    sysdescr_get_packet,
)

from tests.support.processes import stop_process

COMMUNITY = "public"
IN_CI = os.environ.get("CI", "").lower() == "true"


def real_recording(name: str) -> Path:
    """A real device's recording from ../shared/fixtures/snmprec (the test is skipped
    without it, and fails in CI, where it must be present)."""
    import pytest

    from tests.support.recordings import recordings_dir

    d = recordings_dir()
    if d is None:
        if IN_CI:
            pytest.fail("../shared/fixtures/snmprec is missing in CI")
        pytest.skip("../shared/fixtures/snmprec not found (set FLEETROOM_SHARED)")
    return d / f"{name}.snmprec"


@dataclass(frozen=True)
class SimDevice:
    """One simulated device: what it serves and where."""

    name: str
    recording: Path
    host: str
    port: int
    index: int

    @property
    def target(self) -> str:
        """``host:port`` as the agent's ``scan.targets`` take it."""
        return f"{self.host}:{self.port}"


class SimFleet:
    """``recordings`` (name → .snmprec file) served on loopback; a context manager."""

    def __init__(self, recordings: dict[str, Path], *, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="fleetroom-e2e-fleet-")
        self.dir = Path(self._tmp.name)
        # World-readable: snmpsim (as nobody) reads the data and writes its index.
        os.chmod(self.dir, 0o755)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        a, b = random.randrange(1, 255), random.randrange(0, 255)
        self.devices: dict[str, SimDevice] = {}
        for i, (name, path) in enumerate(sorted(recordings.items())):
            host = f"127.{a}.{b}.{i + 1}"
            self.devices[name] = SimDevice(name, path, host, free_udp_port(host), i)

    # --- files ------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.dir / f"dev{self.devices[name].index}"

    def served_file(self, name: str) -> Path:
        """The file snmpsim answers ``name``'s requests from."""
        return self._dir(name) / "data" / f"{COMMUNITY}.snmprec"

    def log(self, name: str) -> str:
        """snmpsim's output for device ``name``."""
        path = self._dir(name) / "snmpsim.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def swap(self, name: str, source: Path) -> None:
        """Serve ``source`` for device ``name`` from now on (atomic, newer mtime)."""
        target = self.served_file(name)
        tmp = target.with_suffix(".swap")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o644)
        later = max(time.time(), target.stat().st_mtime) + 5
        os.utime(tmp, (later, later))
        os.replace(tmp, target)

    # --- life cycle -------------------------------------------------------------------

    def _spawn(self, dev: SimDevice) -> subprocess.Popen[bytes]:
        base = self._dir(dev.name)
        data, cache = base / "data", base / "cache"
        data.mkdir(parents=True)
        cache.mkdir()
        shutil.copyfile(dev.recording, self.served_file(dev.name))
        for p in (base, data):
            p.chmod(0o755)
        self.served_file(dev.name).chmod(0o644)
        cache.chmod(0o777)
        cmd = [*responder_command(), f"--cache-dir={cache}", "--log-level=error",
               "--v3-engine-id=auto", f"--data-dir={data}",
               f"--agent-udpv4-endpoint={dev.target}"]
        with (base / "snmpsim.log").open("wb") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def start(self) -> SimFleet:
        """Start every device and wait until each answers."""
        try:
            for dev in self.devices.values():
                self.procs[dev.name] = self._spawn(dev)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        packet = sysdescr_get_packet(COMMUNITY)
        by_address = {(d.host, d.port): d.name for d in self.devices.values()}
        pending = set(self.devices)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            while pending:
                for name in sorted(pending):
                    proc = self.procs[name]
                    if proc.poll() is not None:
                        raise RuntimeError(f"snmpsim for {name} exited ({proc.returncode}):\n"
                                           f"{self.log(name)[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"simulated devices {sorted(pending)} did not answer")
                for name in sorted(pending):
                    dev = self.devices[name]
                    with contextlib.suppress(OSError):
                        s.sendto(packet, (dev.host, dev.port))
                try:
                    while True:
                        _, address = s.recvfrom(65535)
                        pending.discard(by_address.get(address, ""))
                except OSError:  # timeout, or port unreachable while one starts
                    pass

    def stop(self) -> None:
        """Stop every device and remove the files."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            stop_process(proc)
        self.procs.clear()
        self._tmp.cleanup()

    def __enter__(self) -> SimFleet:
        return self if self.procs else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

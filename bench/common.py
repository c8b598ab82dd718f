"""Helpers shared by the orchestrator and the workers: CPU and memory accounting,
child-process lifetime, machine description.

Child processes the bench starts (workers, the relay, the silent-listener farm)
run in their own process group and are registered here, so one call kills each
group by its id on any exit path (normal end, exception, Ctrl-C, SIGTERM), and
Linux ``PR_SET_PDEATHSIG`` makes them die with the process that started them
should that process itself be killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
SNMP_PORT = 161 if os.geteuid() == 0 else 16161
"""snmpd_fleet serves port 161 as root (16161 otherwise); every target uses it."""


# --- CPU and memory -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """User + system CPU seconds of this process and of its reaped children."""

    self_s: float
    children_s: float

    @classmethod
    def now(cls) -> CpuTimes:
        """The current totals (``getrusage`` of SELF and CHILDREN)."""
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime)

    def since(self, before: CpuTimes) -> CpuTimes:
        """The difference ``self - before``."""
        return CpuTimes(self.self_s - before.self_s, self.children_s - before.children_s)


def peak_rss_mb() -> float:
    """Peak resident set size of this whole process in MiB (``VmHWM``: the
    high-water mark of this address space, which, unlike ``ru_maxrss``, is not
    inherited across ``exec`` from a larger parent)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def process_cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds the given live processes have used (from /proc);
    used to show snmpd's own CPU, which no figure of ours or the CLI's includes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters for this network namespace (/proc/net/snmp):
    InDatagrams, OutDatagrams, RcvbufErrors (datagrams dropped because a socket's
    receive buffer was full) …  System-wide: other traffic on the host adds to them."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return {k: int(v) for k, v in zip(header[1:], values[1:], strict=True)}


def system_cpu_s() -> dict[str, float]:
    """Machine-wide CPU seconds since boot from /proc/stat, split into time charged to
    processes (user + nice + system), interrupt work (irq + softirq: mostly the
    kernel moving our own loopback packets and answering with ICMP) and steal (the
    hypervisor running someone else)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system = ticks[0], ticks[1], ticks[2]
    irq, softirq = ticks[5], ticks[6]
    steal = ticks[7] if len(ticks) > 7 else 0
    return {"processes": (user + nice + system) / hz, "interrupts": (irq + softirq) / hz,
            "steal": steal / hz}


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --- Child processes ----------------------------------------------------------------


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """``preexec_fn``: SIGTERM this child when the process that forked it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """Process groups started by this process; :meth:`stop_all` ends each by its id."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def start(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """``Popen`` in a new session (own process group), registered for cleanup.

        Only call from the main thread (``preexec_fn``)."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            list(cmd), start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only called from the main thread
            **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
        """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        else:
            # The leader is gone; members of its group (e.g. a worker's snmpget) may not be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every registered process group, newest first."""
        for proc in reversed(list(self._procs)):
            self.stop(proc)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interrupts_unwind() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into ``KeyboardInterrupt`` so ``with``/``finally``
    blocks (fleet stop, child cleanup) run for all of them.  SIGINT is set explicitly
    because a process started in the background by a non-interactive shell inherits
    it as *ignored*, and Python then never raises ``KeyboardInterrupt``."""
    old = {s: signal.signal(s, _raise_interrupt)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def wait_bounded(deadline: float, check: Callable[[], bool], step: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``deadline`` (monotonic) passes."""
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


# --- The machine --------------------------------------------------------------------


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, Python, net-snmp and key library versions."""
    import importlib.metadata as md

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    snmpget = shutil.which("snmpget") or "snmpget"
    versions = {}
    for pkg in ("pysnmp", "pyasn1", "cryptography"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "missing"
    netsnmp = _first_line([snmpget, "--version"])
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                            "agent", "packages", "tools/fleetsim"],
                           capture_output=True, text=True, timeout=30, check=False).stdout
    return {
        "git_commit": commit,
        "git_dirty": [ln[3:] for ln in dirty.splitlines()],
        "nproc": cores(),
        "cpu_model": model,
        "mem_total_mb": mem_total,
        "kernel": platform.release(),
        "python": sys.version.split()[0] + f" ({sys.executable})",
        "net_snmp": re.sub(r"^NET-SNMP version:\s*", "", netsnmp),
        "libraries": versions,
        "euid": os.geteuid(),
        "snmp_port": SNMP_PORT,
    }


def dump_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (atomic: temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)

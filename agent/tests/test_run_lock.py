"""One ``run`` per data directory: the lock against real second processes.

The holders are separate Python processes (``flock`` locks are per open file, so a
second process is the real case); the pid each names is compared with the pid the
OS gave that process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleetroom_agent.runtime.lock import PROBE_GRACE_S, AlreadyRunning, RunLock, holder_pid

HOLD = """
import sys, time
from pathlib import Path
from fleetroom_agent.runtime.lock import RunLock
lock = RunLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""

PROBE = """
import fcntl, sys, time
from pathlib import Path
with (Path(sys.argv[1]) / "run.lock").open("a+b") as fh:
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # what holder_pid's probe takes, held longer
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _start(code: str, data_dir: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code, str(data_dir), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    holder = _start(HOLD, tmp_path, 30)
    try:
        assert holder_pid(tmp_path) == holder.pid
        t0 = time.monotonic()
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
        assert time.monotonic() - t0 >= PROBE_GRACE_S  # it waited out a possible probe
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # kill -9: the kernel released the lock, nothing stale to clean up.
    assert holder_pid(tmp_path) is None
    with RunLock(tmp_path):
        assert holder_pid(tmp_path) == os.getpid()


def test_a_status_probe_at_startup_does_not_stop_run(tmp_path):
    """``status`` probes by taking the lock for an instant; a ``run`` starting in that
    instant waits it out instead of exiting as if another agent ran."""
    probe = _start(PROBE, tmp_path, PROBE_GRACE_S / 5)
    try:
        with RunLock(tmp_path) as lock:
            assert lock.path.read_text() == str(os.getpid())
    finally:
        probe.wait()

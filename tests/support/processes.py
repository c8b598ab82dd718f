"""Stopping the helper servers tests start (slapd, the OIDC provider)."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None,
                 grace_s: float = 10) -> None:
    """Terminate ``proc`` if it still runs; kill it when it ignores that for ``grace_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

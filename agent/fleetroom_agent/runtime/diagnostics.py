"""The ``diagnostics`` command's bundle: enough for support to see what is wrong, no secrets.

Small on purpose (it travels as a command result in the outbox): versions, the
config with every literal secret replaced, outbox statistics, the last errors,
the schedule, jobs and transports.  Device addresses and names are the
customer's data but also exactly what support needs; community strings and USM
keys never appear (``AgentConfig.redacted``; credentials are only ever named).
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Runtime

PACKAGES = ("fleetroom-agent", "fleetroom-protocol", "fleetroom-profiles", "pysnmp", "httpx",
            "aiomqtt", "pynacl", "pydantic")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def diagnostics_bundle(runtime: Runtime) -> dict[str, Any]:
    """Collect the bundle (runs in a worker thread: it reads the outbox)."""
    snapshot = runtime.snapshot()
    return {
        "schema": "fleetroom.agent-diagnostics/1",
        "agent_id": runtime.agent_id,
        "versions": {"python": sys.version.split()[0],
                     "platform": platform.platform(),
                     **{name: _version(name) for name in PACKAGES}},
        "config": runtime.config.redacted(),
        "outbox": snapshot["outbox"],
        "errors": snapshot["errors"],
        "jobs": snapshot["jobs"],
        "schedule": snapshot["schedule"],
        "transports": snapshot["transports"],
        "devices": [{k: v for k, v in d.as_dict().items() if k in (
            "address", "port", "credential", "profile", "model", "weak_crypto", "failures",
            "last_read_at")} for d in list(runtime.registry.devices.values())[:200]],
        "profiles": snapshot["profiles"],
        "counts": snapshot["counts"],
    }

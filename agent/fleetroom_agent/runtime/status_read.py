"""The status document of ``fleetroom-agent status --json`` and the status page, read-only.

Both run next to a live ``run`` (another process, or a request handler inside
it), so reading the status must not be able to change what it reads: no
:class:`~fleetroom_agent.outbox.Outbox` (its constructor migrates, quarantines,
creates the reserve file), no moving a damaged ``state.json`` aside, no file
created anywhere.  The queue figures come from the read-only
:func:`~fleetroom_agent.outbox.read_outbox_status`; the rest from ``state.json``,
which the runtime rewrites every few seconds (see :mod:`.state`).

The document's keys are those of ``fleetroom.agent-status/1`` (documented in
``docs/agent-service.md``): ``outbox`` is ``null`` when there is no outbox yet,
and ``outbox_error`` appears, as before, only when the outbox could not be read
(busy, damaged, foreign, newer schema, unreadable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..outbox import DEFAULT_FILENAME, ReadState, read_outbox_status
from .lock import holder_pid
from .state import STATE_FILE, STATUS_SCHEMA, outbox_summary


def _read_state_file(path: Path) -> dict[str, Any]:
    """``state.json`` as a dict; ``{}`` when missing, unreadable or damaged — left as it is.

    Unlike :func:`.jsonfile.read_json` this never moves a damaged file aside:
    that file belongs to the running agent, which rewrites it within seconds.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}
    return raw if isinstance(raw, dict) else {}


def _agent_id(data_dir: Path, state: dict[str, Any]) -> str | None:
    found = state.get("agent_id")
    if isinstance(found, str) and found:
        return found
    try:
        from ..identity import AgentIdentity

        ident = AgentIdentity.load(data_dir)
    except Exception:
        return None
    agent_id = getattr(ident, "agent_id", None)
    return str(agent_id) if agent_id else None


def read_status(data_dir: Path) -> dict[str, Any]:
    """Everything ``status --json`` and the status page show, read from ``data_dir``.

    Works whether or not ``run`` is active and never creates, moves or locks a
    file for writing (a typo in the path must not produce an empty agent that
    looks fine, and a status request must not disturb the running agent).
    """
    state = _read_state_file(data_dir / STATE_FILE)
    pid = holder_pid(data_dir) if data_dir.is_dir() else None
    agent_id = _agent_id(data_dir, state)
    out: dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "data_dir": str(data_dir),
        "running": pid is not None,
        "pid": pid,
        "agent_id": agent_id,
        "enrolled": agent_id is not None,
        "state_written_at": state.get("written_at"),
        "started_at": state.get("started_at") if pid is not None else None,
        "version": state.get("version"),
        "last_ack_at": state.get("last_ack_at"),
        "last_error": state.get("last_error"),
        "errors": state.get("errors", []),
        "schedule": state.get("schedule"),
        "transports": state.get("transports", []),
        "transport": state.get("transport"),
        "devices": state.get("devices", 0),
        "weak_crypto_devices": state.get("weak_crypto_devices", []),
        "jobs": state.get("jobs", {}),
        "counts": state.get("counts", {}),
        "profiles": state.get("profiles", {}),
        "outbox": None,
        "queue_items": None,
        "queue_bytes": None,
        "oldest_unsent_at": None,
    }
    if agent_id is None:
        return out
    reading = read_outbox_status(data_dir / DEFAULT_FILENAME, agent_id)
    if reading.stats is not None:
        summary = outbox_summary(reading.stats)
        out["outbox"] = summary
        out["queue_items"] = summary["queue_items"]
        out["queue_bytes"] = summary["queue_bytes"]
        out["oldest_unsent_at"] = summary["oldest_unsent_at"]
    elif reading.state is not ReadState.MISSING:
        out["outbox_error"] = f"{reading.state}: {reading.detail}"
    return out

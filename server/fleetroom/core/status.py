"""``fleetroom status``: what the installation holds, for operators and scripts."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db.models import Max

COUNTED = {
    "tenants": "tenancy.Tenant",
    "users": "accounts.User",
    "agents": "agents.Agent",
    "devices": "fleet.Device",
    "readings": "fleet.Reading",
}


def collect_status() -> dict[str, Any]:
    """Counts per kind (``None`` when that part is not installed) and the last reading."""
    out: dict[str, Any] = {}
    last_reading = None
    for key, label in COUNTED.items():
        try:
            model = apps.get_model(label)
        except LookupError:
            out[key] = None
            continue
        out[key] = model.objects.count()
        if key == "readings":
            last_reading = model.objects.aggregate(m=Max("taken_at"))["m"]
    out["last_reading_at"] = last_reading
    out["agent_list"] = _agent_list()
    return out


def _agent_list() -> list[dict[str, Any]] | None:
    """Each agent: id, name, tenant, last seen, version, queue depth, gaps, overdue."""
    if not apps.is_installed("fleetroom.agents"):
        return None
    from fleetroom.agents.display import status_rows

    return status_rows()

"""Typed JSON of the fleet app (architecture rule 10): every JSON column has a
pydantic model, and services validate through it before writing."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

STRING_LIST: TypeAdapter[list[str]] = TypeAdapter(list[str])
"""``DeviceModel.colorants``, ``StatusSample.error_flags``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventDetails(_Strict):
    """``DeviceEvent.details``: what a person needs to understand the event."""

    old: str | None = None
    """Previous serial / firmware / tenant name …"""
    new: str | None = None
    counter: str | None = None
    old_value: int | None = None
    new_value: int | None = None
    delta: int | None = None
    width: int | None = None
    from_tenant_id: int | None = None
    to_tenant_id: int | None = None
    other_device_id: int | None = None
    """The device that was at this MAC/address before (serial change), or the weak
    duplicate that was upgraded."""
    matched_on: Literal["mac", "address"] | None = None
    identity_kind: str | None = None

    def as_json(self) -> dict[str, Any]:
        """What goes into the JSON column: only the fields that say something."""
        return self.model_dump(mode="json", exclude_none=True)


class DeviceAudit(_Strict):
    """Audit data of ``device.moved`` / ``device.serial_changed`` /
    ``device.identity_upgraded`` / ``device.claim_refused`` (no floats: the audit hash
    must survive jsonb).  For a refused claim ``from_tenant_id`` is the tenant that
    keeps the device."""

    identity_key: str
    identity_kind: str
    serial: str = ""
    manufacturer: str = ""
    mac: str = ""
    ip: str = ""
    from_tenant_id: int | None = None
    other_device_id: int | None = None
    agent_id: int | None = None
    taken_at: str = Field(description="ISO 8601 time of the reading that caused it")


class DiscoveredDevice(_Strict):
    """One device first seen in an ingest batch."""

    id: int
    identity_key: str


class DevicesDiscovered(_Strict):
    """Audit data of ``device.discovered``: the devices one ingest batch created."""

    agent_id: int | None = None
    count: int
    devices: list[DiscoveredDevice]


class FieldChange(_Strict):
    """One edited attribute: its value before and after, as text (``None`` = empty)."""

    old: str | None = None
    new: str | None = None


class DeviceUpdated(_Strict):
    """Audit data of ``device.updated``: what a person changed on a device.

    Tenants are named by id *and* name at the time, because a later rename must not
    rewrite what the log says happened.
    """

    identity_key: str
    changes: dict[str, FieldChange]


class ExportFilters(_Strict):
    """The filters an export was made with (what the rows were selected by)."""

    q: str = ""
    state: str = ""
    tenant_id: int | None = None
    manufacturer: str = ""
    supplies: str = ""
    sort: str = ""


class DevicesExported(_Strict):
    """Audit data of ``device.exported``: data left the product (who, what, how much)."""

    format: Literal["csv"]
    rows: int
    """Devices of this chain's tenant subtree in the export."""
    filters: ExportFilters


AUDIT_ACTIONS: dict[str, type[BaseModel]] = {
    "device.discovered": DevicesDiscovered,
    "device.moved": DeviceAudit,
    "device.serial_changed": DeviceAudit,
    "device.identity_upgraded": DeviceAudit,
    "device.claim_refused": DeviceAudit,
    "device.updated": DeviceUpdated,
    "device.exported": DevicesExported,
}

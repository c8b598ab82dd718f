"""Assertions shared by the end-to-end tests: the server's rows against the recordings."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from tests.support.e2e_expect import Expected
from tests.support.e2e_fleet import SimFleet
from tests.support.e2e_server import FleetroomServer


@dataclass
class AgentRow:
    """``agents_agent`` as the tests need it."""

    pk: int
    tenant_id: int
    status: str
    policy_violations: int


def agent_row(server: FleetroomServer, agent_id: str) -> AgentRow:
    (row,) = server.query("SELECT id, tenant_id, status, policy_violations FROM agents_agent "
                          "WHERE public_id = ?", (agent_id,))
    return AgentRow(row["id"], row["tenant_id"], row["status"], row["policy_violations"])


def parse_db_time(text: str) -> datetime:
    """A DateTimeField as Django writes it to SQLite (UTC, no offset)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def device_key(exp: Expected, fleet: SimFleet, site_id: int) -> str:
    """The identity key the server must give the device (architecture rule 2: serial
    and manufacturer when both are known, else the reporting tenant and the address)."""
    if exp.serial and exp.manufacturer:
        return f"serial/{exp.manufacturer.upper().replace(' ', '')}/{exp.serial.upper()}"
    return f"address/{site_id}/{fleet.devices[exp.label].host}"


def wait_for_devices(server: FleetroomServer, site_id: int, count: int, *,
                     timeout: float) -> list[sqlite3.Row]:
    """Until the site has ``count`` devices, each with its last reading filed."""
    return server.wait_for(
        "SELECT * FROM fleet_device WHERE tenant_id = ?", (site_id,),
        lambda rows: len(rows) >= count and all(r["last_reading_id"] for r in rows),
        timeout=timeout, what=f"{count} devices of site #{site_id}")


def assert_site_holds_exactly(server: FleetroomServer, site_id: int, agent_pk: int,
                              fleet: SimFleet, expected: Iterable[Expected],
                              fleet_started_at: datetime) -> None:
    """The site's devices, readings, counters, supplies and open alerts are exactly
    what the recordings imply — no more, no fewer, nothing elsewhere."""
    expected = list(expected)
    devices = {r["identity_key"]: r for r in
               server.query("SELECT * FROM fleet_device WHERE tenant_id = ?", (site_id,))}
    want = {device_key(e, fleet, site_id): e for e in expected}
    assert sorted(devices) == sorted(want), "devices of the site"
    readings = server.query("SELECT * FROM fleet_reading WHERE tenant_id = ?", (site_id,))
    assert all(r["agent_id"] == agent_pk for r in readings)
    # Static recordings and no scheduled meter read during the test: one reading each.
    assert sorted(r["device_id"] for r in readings) == sorted(d["id"] for d in devices.values())
    by_device = {r["device_id"]: r for r in readings}
    for key, exp in want.items():
        dev = devices[key]
        reading = by_device[dev["id"]]
        where = f"{exp.label} ({exp.recording.name})"
        assert dev["serial"] == (exp.serial or ""), where
        assert dev["manufacturer"] == (exp.manufacturer or ""), where
        assert bool(dev["identity_weak"]) == (not exp.serial), where
        assert reading["profile"] == exp.profile, where
        assert reading["target"] == fleet.devices[exp.label].target, where
        counters = {r["name"]: r["value"] for r in server.query(
            "SELECT name, value FROM fleet_countervalue WHERE reading_id = ?", (reading["id"],))}
        assert sorted(counters) == sorted(exp.counters), where
        elapsed = (parse_db_time(reading["taken_at"]) - fleet_started_at).total_seconds()
        for name, spec in exp.counters.items():
            low, high = spec.bounds(elapsed)
            assert low <= counters[name] <= high, (where, name, counters[name], low, high)
        supplies = {r["supply_index"] for r in server.query(
            "SELECT supply_index FROM fleet_supplylevel WHERE reading_id = ?", (reading["id"],))}
        assert supplies == exp.supply_indexes, where
        alerts = server.query("SELECT * FROM fleet_alertrecord WHERE device_id = ? AND "
                              "closed_at IS NULL", (dev["id"],))
        assert {a["tenant_id"] for a in alerts} <= {site_id}
        prt = {a["alert_index"]: (a["severity"], a["description"] or None)
               for a in alerts if a["source"] == "prtAlertTable"}
        assert prt == exp.prt_alerts, where
        flags = {a["code"] for a in alerts if a["source"] == "hrPrinterDetectedErrorState"}
        assert flags == exp.error_flags, where
    # Nothing of this agent went anywhere else.
    elsewhere = server.query("SELECT COUNT(*) AS n FROM fleet_reading WHERE agent_id = ? AND "
                             "tenant_id != ?", (agent_pk, site_id))
    assert elsewhere[0]["n"] == 0


def assert_items_filed(server: FleetroomServer, agent_pk: int, *, transport: str,
                       readings: int) -> None:
    """Every batch of the agent came by ``transport``; every item was filed (state
    ``done``), one per reading, on the readings/alerts streams."""
    batches = server.query("SELECT transport, processed_at, error FROM agents_receivedbatch "
                           "WHERE agent_id = ?", (agent_pk,))
    assert batches, "no batch received"
    assert {b["transport"] for b in batches} == {transport}
    assert all(b["processed_at"] and not b["error"] for b in batches)
    items = server.query("SELECT stream, state, error FROM agents_receiveditem "
                         "WHERE agent_id = ?", (agent_pk,))
    assert [(i["state"], i["error"]) for i in items] == [("done", "")] * len(items)
    assert sum(i["stream"] in ("readings", "alerts") for i in items) == readings

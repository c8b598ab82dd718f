"""Helpers shared by the API tests (this module holds no tests).

A small world built through the real services: a tenant tree, one user per
vantage point, and devices with readings ingested through
:func:`fleetroom.fleet.services.ingest_readings` from real
``fleetroom_protocol.Reading`` objects.  Tests take their expected values from the
readings built here, never from the API's own output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.test import Client
from fleetroom.accounts.models import User
from fleetroom.accounts.testing import enable_totp, make_user
from fleetroom.api import services as api_services
from fleetroom.api.models import TokenSource
from fleetroom.core.scoping import SYSTEM
from fleetroom.fleet.services import ingest_readings
from fleetroom.tenancy.models import Tenant
from fleetroom.tenancy.services import do_create_tenant, do_grant_membership
from fleetroom_protocol import Alert, Counter, Identity, Reading, Status, Supply

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
"""When the first reading of every device was taken."""


def reading(serial: str, taken_at: datetime, *, total: int, mono: int | None = None,
            manufacturer: str = "Ricoh", model: str = "IM C3000", ip: str = "10.0.0.10",
            mac: str = "00:11:22:33:44:55", hostname: str = "", black: float | None = None,
            alerts: list[Alert] | None = None, device_status: str = "running") -> Reading:
    """A complete reading of one device, as the agent would send it."""
    counters = [Counter(name="total", value=total, unit="impressions", source="test:total",
                        width=32)]
    if mono is not None:
        counters.append(Counter(name="mono", value=mono, unit="impressions",
                                source="test:mono", width=32))
    supplies = [
        Supply(index=1, class_="consumed", type="toner", colour="black",
               description="Black Toner", level_percent=black,
               state="ok" if black is not None else "unknown",
               raw_level=None if black is None else round(black),
               raw_max=None if black is None else 100, unit="percent", part_number="842311"),
        Supply(index=2, class_="receptacle", type="wasteToner", description="Waste Toner Box",
               state="some-remaining", raw_level=-3, raw_max=-2),
    ]
    return Reading(
        taken_at=taken_at, target=ip, snmp_version="2c", credential="public",
        identity=Identity(vendor=manufacturer, manufacturer=manufacturer, model=model,
                          serial=serial, mac=mac, ip=ip, hostname=hostname or None,
                          firmware="1.0", sys_name=f"prn-{serial.lower()}",
                          device_kind="mfp"),
        counters=counters, supplies=supplies, alerts=alerts or [],
        status=Status(device_status=device_status, printer_status="idle",
                      error_state_raw="00"),
    )


TONER_LOW = Alert(source="prtAlertTable", severity="warning", code="tonerLow", index=1,
                  group="markerSupplies", group_index=1, description="Toner low")
JAMMED = Alert(source="prtAlertTable", severity="critical", code="jammed", index=2,
               group="mediaPath", group_index=1, description="Paper jam")


@dataclass
class World:
    """Everything a test needs by name."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    """Device ids by the key of the site they report from."""
    serials: dict[str, str] = field(default_factory=dict)
    readings: dict[str, list[Reading]] = field(default_factory=dict)
    """What was ingested per site key, oldest first."""


SITES = ("s11", "s12", "s21", "s31")


def build_world(*, mfa_for_wide_roles: bool = True) -> World:
    """op → dealer A → customer 1 (sites s11, s12) and customer 2 (s21); dealer B →
    customer 3 (s31).  One device per site; s11's has three readings and alerts."""
    w = World()

    def add(key: str, parent: str | None, kind: str, name: str) -> None:
        w.tenants[key] = do_create_tenant(w.tenants.get(parent) if parent else None, kind,
                                          name, SYSTEM)

    add("op", None, "operator", "Platform")
    add("dA", "op", "dealer", "Dealer A")
    add("c1", "dA", "customer", "Acme")
    add("s11", "c1", "site", "Berlin")
    add("l111", "s11", "location", "Berlin 2nd floor")
    add("s12", "c1", "site", "Hamburg")
    add("c2", "dA", "customer", "Globex")
    add("s21", "c2", "site", "Munich")
    add("dB", "op", "dealer", "Dealer B")
    add("c3", "dB", "customer", "Initech")
    add("s31", "c3", "site", "Vienna")

    def member(key: str, tenant: str, role: str, **kw: Any) -> None:
        w.users[key] = make_user(key)
        do_grant_membership(w.users[key], w.tenants[tenant], role=role, acting_user=SYSTEM,
                            **kw)

    member("op_admin", "op", "operator_admin")
    member("dA_admin", "dA", "dealer_admin")
    member("c1_admin", "c1", "customer_admin")
    member("c1_viewer", "c1", "customer_viewer")
    member("s11_viewer", "c1", "customer_viewer", sites=[w.tenants["s11"]])
    member("c3_viewer", "c3", "customer_viewer")
    w.users["nobody"] = make_user("nobody")
    if mfa_for_wide_roles:
        for key in ("op_admin", "dA_admin"):
            enable_totp(w.users[key])

    s11 = [
        reading("S11A", T0, total=1000, mono=800, black=80.0, alerts=[JAMMED]),
        reading("S11A", T0 + timedelta(hours=1), total=1100, mono=870, black=60.0,
                alerts=[TONER_LOW]),
        reading("S11A", T0 + timedelta(hours=2), total=1250, mono=950, black=40.0,
                alerts=[TONER_LOW]),
    ]
    per_site = {
        "s11": s11,
        "s12": [reading("S12B", T0, total=500, manufacturer="Kyocera", model="ECOSYS M3145",
                        ip="10.0.1.20", mac="00:11:22:33:44:66", black=None)],
        "s21": [reading("S21C", T0, total=700, manufacturer="HP", model="LaserJet M404",
                        ip="10.0.2.30", mac="00:11:22:33:44:77", black=20.0,
                        device_status="warning")],
        "s31": [reading("S31D", T0, total=900, manufacturer="Ricoh", model="IM C3000",
                        ip="10.0.3.40", mac="00:11:22:33:44:88", black=90.0)],
    }
    for key, readings in per_site.items():
        summary = ingest_readings(readings, tenant=w.tenants[key])
        assert summary.stored == len(readings), summary.problems
        (device_id,) = summary.touched_device_ids
        w.devices[key] = device_id
        w.serials[key] = readings[0].identity.serial or ""
        w.readings[key] = readings
    return w


def issue(user: User, name: str = "test", days: int | None = None) -> str:
    """A fresh token for ``user`` (through the service, as the web page does)."""
    return api_services.do_issue_token(user, name=name, days=days,
                                       created_via=TokenSource.WEB).secret


def bearer(token: str) -> dict[str, str]:
    """Request headers carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


def get(client: Client, path: str, token: str | None, **params: Any) -> Any:
    """GET an API path with a token (``None``: without one)."""
    headers = bearer(token) if token else {}
    return client.get(path, params, headers=headers)

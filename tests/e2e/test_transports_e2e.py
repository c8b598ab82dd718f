"""Agent ↔ server ↔ simulated fleet, end to end, once per transport.

Real processes only: ``fleetroom serve`` over HTTPS with a private CA (with its
Huey worker, MQTT bridge and SMTP mail intake), a private Mosquitto with TLS, one
snmpsim per simulated device on its own loopback address, and the agent enrolled
with a token from ``fleetroom manage agent_token`` and run as ``fleetroom-agent
run --config agent.toml`` with a single transport in ``[transports] order``.

Each fleet mixes complete SYNTHETIC recordings (live page counters through
snmpsim's ``numeric`` module, supplies, warning alerts) with real, partial ones
from ../shared/fixtures/snmprec (a vendor serial only; sysDescr and sysObjectID
only, so identified by address), and the HTTPS fleet has a switch that must not
appear.  What the server must hold is worked out from the recordings and the
profile YAML (:mod:`tests.support.e2e_expect`); the server's SQLite database is
then compared with it row by row (:mod:`tests.support.e2e_checks`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC

from tests.support import recordings as rec
from tests.support.e2e_agent import AgentProcess
from tests.support.e2e_checks import (
    agent_row,
    assert_items_filed,
    assert_site_holds_exactly,
    wait_for_devices,
)
from tests.support.e2e_expect import expected, is_printer
from tests.support.e2e_fleet import SimFleet, real_recording
from tests.support.e2e_server import MAIL_INTAKE_ADDRESS
from tests.support.e2e_stack import Stack, need_broker

pytestmark = [pytest.mark.slow, pytest.mark.snmpsim, pytest.mark.xdist_group("e2e-stack"),
              pytest.mark.timeout(300)]

DELIVERY_TIMEOUT_S = 90.0



def run_fleet(stack: Stack, tmp_path: Path, site: str, transport: str,
              devices: list[tuple[str, Path, str]], *, not_printers: dict[str, Path] | None = None,
              email: bool = False) -> AgentProcess:
    """Enroll an agent into ``site``, run it against ``devices`` (label, recording,
    expected profile) plus ``not_printers`` until the server holds every device."""
    server = stack.server
    site_id = stack.sites[site]
    exps = [expected(label, path, profile) for label, path, profile in devices]
    for label, path in (not_printers or {}).items():
        assert not is_printer(rec.load(path), None), label
    recordings = {label: path for label, path, _ in devices} | (not_printers or {})
    started_at = datetime.now(UTC)
    with SimFleet(recordings) as fleet:
        agent = AgentProcess(
            tmp_path, f"agent-{site}", targets=[d.target for d in fleet.devices.values()],
            transports=[transport],
            email={"host": "127.0.0.1", "port": server.smtp_port, "security": "starttls",
                   "mail_from": f"agent@{site}.e2e.fleetroom.test",
                   "ca_file": str(server.ca_file)} if email else None)
        agent.enroll(server.url, stack.token(site), stack.ca_bundle(agent.base))
        t0 = time.monotonic()
        agent.start()
        try:
            wait_for_devices(server, site_id, len(exps), timeout=DELIVERY_TIMEOUT_S)
            delivered_s = time.monotonic() - t0
            row = agent_row(server, agent.agent_id or "")
            assert row.tenant_id == site_id
            server.wait_for("SELECT COUNT(*) AS n FROM agents_receivedbatch WHERE agent_id = ?"
                            " AND processed_at IS NULL", (row.pk,), lambda r: r[0]["n"] == 0,
                            timeout=30, what="all batches processed")
            assert_site_holds_exactly(server, site_id, row.pk, fleet, exps, started_at)
            assert_items_filed(server, row.pk, transport="mail" if email else transport,
                               readings=len(exps))
            # What `fleetroom-agent status --json` shows (state.json, rewritten every few
            # seconds): every device known; two-way transports: all acknowledged, the
            # outbox empty; e-mail is one-way: every item still queued, none acknowledged
            # (docs/mail-transport.md, "Acknowledgements: mail is one-way").
            queued = len(exps) if email else 0
            status = agent.wait_status(
                lambda d: d["devices"] == len(exps) and d["queue_items"] == queued
                and bool(d["last_ack_at"]) != email, timeout=20,
                what=f"{len(exps)} devices and {queued} queued items in the agent's status")
        finally:
            agent.stop()
    print(f"{transport}: {len(exps)} devices stored {delivered_s:.1f} s after "
          "`fleetroom-agent run` started")
    assert status["running"] is True
    assert [t["name"] for t in status["transports"]] == [transport]
    return agent


def test_https(stack: Stack, tmp_path: Path) -> None:
    run_fleet(stack, tmp_path, "https", "https", [
        ("hp-m479", SYNTHETIC / "demo-hp-clj-m479.snmprec", "hp"),
        ("kyocera-m3145", SYNTHETIC / "demo-kyocera-m3145.snmprec", "kyocera"),
        ("kyocera-real", real_recording("kyocera"), "kyocera"),  # vendor serial, no counters
        ("ricoh-real", real_recording("ricoh"), "ricoh"),  # sysDescr + sysObjectID only
    ], not_printers={"switch": SYNTHETIC / "demo-switch-cisco.snmprec"})


def test_mqtt_over_tls(stack: Stack, tmp_path: Path) -> None:
    broker = need_broker(stack)
    agent = run_fleet(stack, tmp_path, "mqtt", "mqtt", [
        ("xerox-c405", SYNTHETIC / "demo-xerox-c405.snmprec", "xerox"),
        ("ricoh-imc3000", SYNTHETIC / "demo-ricoh-imc3000.snmprec", "ricoh"),
        ("gestetner-real", real_recording("gestetner"), "gestetner"),  # Ricoh-MIB serial, 5 OIDs
        ("hp-m130nw-real", real_recording("jetdirect_m130nw"), "hp"),  # HP private counters
    ])
    identity = agent.identity()
    assert identity["mqtt"]["url"] == broker.mqtts_url
    # The broker holds the agent's own account (made at enrollment), hashed only.
    clients = {c["username"] for c in broker.dynsec()["clients"]}  # type: ignore[index]
    assert agent.agent_id in clients
    assert identity["mqtt"]["password"] not in broker.dynsec_file.read_text()


def test_email(stack: Stack, tmp_path: Path) -> None:
    """One-way: the readings are stored, but no acknowledgement comes back by mail, so
    the items stay in the agent's outbox until a two-way transport acknowledges them
    (docs/mail-transport.md, "Acknowledgements: mail is one-way"; checked in
    :func:`run_fleet`)."""
    agent = run_fleet(stack, tmp_path, "mail", "email", [
        ("canon-c5535", SYNTHETIC / "demo-canon-c5535.snmprec", "canon"),
        ("lexmark-ms621", SYNTHETIC / "demo-lexmark-ms621.snmprec", "lexmark"),
        ("ricoh-mpc3002-real", real_recording("ricoh_mpc3002"), "ricoh"),
        ("canon-d1180-real", real_recording("canonprinter_d1180"), "canon"),  # 2 OIDs: by address
    ], email=True)
    assert agent.identity()["mail_to"] == MAIL_INTAKE_ADDRESS

"""Critical-alert latency, end to end: a printer jams → the alert is stored on the server.

The promise (issue 4, docuFORM promises 10 minutes): **≤ 60 s** from the moment the
device shows a critical alert to the moment the server has stored it.

How the printer jams at runtime: the simulated device (one snmpsim process on its
own loopback address) first serves a *warnings-only* state, and the test then
swaps the served recording for the *jammed* one (:meth:`SimFleet.swap`: atomic
replace with a newer mtime; snmpsim re-indexes the file at the next request).
Both states are the SYNTHETIC ``alerts`` printer: ``alerts.snmprec`` is the jam
(prtAlertTable row 12 critical, hrDeviceStatus down, error state jammed +
lowToner); the warnings-only state is ``alerts-warning.snmprec`` with the identity
lines (sysDescr, sysName, sysLocation, MAC, serial) of ``alerts.snmprec`` put in,
so it is the same printer before and after — :func:`restate` builds it.  Swapping
files was chosen over snmpsim variation modules because the whole state changes
at once (alert table, device status, error bits, counters of alert events), as
on a real printer, and the recording files stay the single source of the
expected values.

What is measured: wall time from the swap to the first moment the server's
database holds an open critical ``AlertRecord`` for the device — i.e. the
agent's next status poll (``[schedule] max_status_poll_s`` at its allowed local
minimum, ``LocalSchedule``'s lower bound, jittered by the server's schedule), its
full read of the device, the CRITICAL outbox item and the sender woken at once,
HTTPS upload and commit, and the Huey worker filing the reading.  The run waits
for a status poll *after* the startup scan before it swaps, because the agent
takes its status baseline right after each full read (the test at the end
covers an alert raised between the startup scan and the first status poll).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fleetroom_agent.outbox import Priority
from fleetroom_agent.runtime.config import LocalSchedule
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC

from agent.tests.test_runtime_commands import StandInSender
from tests.support import recordings as rec
from tests.support.e2e_agent import AgentProcess
from tests.support.e2e_checks import agent_row, parse_db_time, wait_for_devices
from tests.support.e2e_expect import expected
from tests.support.e2e_fleet import SimFleet
from tests.support.e2e_stack import Stack

LATENCY_BUDGET_S = 60.0
IDENTITY_OIDS = ("1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.6.0",
                 "1.3.6.1.2.1.2.2.1.6.1", "1.3.6.1.2.1.43.5.1.1.17.1")
"""sysDescr (carries SN: on HP), sysName, sysLocation, ifPhysAddress.1, prtGeneralSerialNumber."""
MIN_LOCAL_STATUS_POLL_S = next(
    int(m.ge) for m in LocalSchedule.model_fields["max_status_poll_s"].metadata
    if getattr(m, "ge", None) is not None)
"""The smallest ``[schedule] max_status_poll_s`` an agent.toml may set."""


def restate(state: Path, identity: Path, out: Path) -> Path:
    """``state``'s lines with ``identity``'s values for :data:`IDENTITY_OIDS`: the
    printer of ``identity`` in the state of ``state``."""
    ident = rec.load(identity)
    lines = []
    for line in state.read_text(encoding="latin-1").splitlines():
        oid = line.split("|", 1)[0].lstrip(".")
        if oid in IDENTITY_OIDS:
            tag, value = ident[oid]
            lines.append(f"{oid}|{tag}|{value}")
        else:
            lines.append(line)
    out.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return out


def polled_after_scan(doc: dict[str, Any]) -> bool:
    """A status poll started after the startup scan finished, and ended without a
    failed device: the agent holds its status baseline for every device the scan found."""
    jobs = doc.get("jobs") or {}
    scan, poll = jobs.get("rediscovery") or {}, jobs.get("status-poll") or {}
    return bool(scan.get("finished_at") and poll.get("started_at") and poll.get("finished_at")
                and poll["started_at"] > scan["finished_at"]
                and "failed" not in (poll.get("detail") or ""))


@pytest.mark.slow
@pytest.mark.snmpsim
@pytest.mark.xdist_group("e2e-stack")
@pytest.mark.timeout(300)
def test_critical_alert_is_stored_on_the_server_within_60_s(stack: Stack, tmp_path: Path) -> None:
    server, site_id = stack.server, stack.sites["latency"]
    jammed = SYNTHETIC / "alerts.snmprec"
    before = restate(SYNTHETIC / "alerts-warning.snmprec", jammed, tmp_path / "before.snmprec")
    exp_before, exp_after = expected("printer", before, "hp"), expected("printer", jammed, "hp")
    assert exp_before.serial == exp_after.serial  # one printer, two states
    assert not exp_before.critical
    assert [sev for sev, _ in exp_after.prt_alerts.values()].count("critical") == 1

    with SimFleet({"printer": before}) as fleet:
        agent = AgentProcess(tmp_path, "agent-latency", targets=[fleet.devices["printer"].target],
                             status_poll_s=MIN_LOCAL_STATUS_POLL_S)
        agent.enroll(server.url, stack.token("latency"), server.ca_file)
        jitter = float(agent.identity()["schedule"]["jitter"])
        agent.start()
        try:
            (device,) = wait_for_devices(server, site_id, 1, timeout=90)
            assert device["serial"] == exp_before.serial
            assert device["status"] == "warning"
            assert not server.query("SELECT id FROM fleet_alertrecord WHERE device_id = ? AND "
                                    "severity = 'critical'", (device["id"],))
            doc = agent.wait_status(polled_after_scan, timeout=4 * MIN_LOCAL_STATUS_POLL_S + 30,
                                    what="a status poll after the startup scan")
            assert doc["schedule"]["effective_status_poll_s"] == MIN_LOCAL_STATUS_POLL_S

            # The printer jams.
            swapped_at = datetime.now(UTC)
            t0 = time.monotonic()
            fleet.swap("printer", jammed)
            server.wait_for(
                "SELECT id FROM fleet_alertrecord WHERE device_id = ? AND severity = 'critical' "
                "AND closed_at IS NULL", (device["id"],), bool, timeout=LATENCY_BUDGET_S + 60,
                what="a critical alert on the server", interval=0.1)
            latency = time.monotonic() - t0
        finally:
            agent.stop()

    alerts = server.query("SELECT * FROM fleet_alertrecord WHERE device_id = ? AND "
                          "closed_at IS NULL", (device["id"],))
    assert {a["tenant_id"] for a in alerts} == {site_id}
    prt = {a["alert_index"]: (a["severity"], a["description"])
           for a in alerts if a["source"] == "prtAlertTable"}
    assert prt == exp_after.prt_alerts  # the jam (critical) and the two toner warnings
    flags = {a["code"] for a in alerts if a["source"] == "hrPrinterDetectedErrorState"}
    assert flags == exp_after.error_flags
    (dev,) = server.query("SELECT * FROM fleet_device WHERE id = ?", (device["id"],))
    assert dev["status"] == "error"
    reading = server.query("SELECT * FROM fleet_reading WHERE id = ?", (dev["last_reading_id"],))[0]
    read_at = parse_db_time(reading["taken_at"])
    assert read_at >= swapped_at
    # The scan's reading travelled as a normal item, the jam as a critical alerts item.
    pk = agent_row(server, agent.agent_id or "").pk
    items = server.query("SELECT i.stream, i.priority, b.received_at AS committed_at "
                         "FROM agents_receiveditem i JOIN agents_receivedbatch b "
                         "ON b.id = i.batch_id WHERE i.agent_id = ? ORDER BY i.id", (pk,))
    assert [(i["stream"], i["priority"]) for i in items] == [
        ("readings", Priority.NORMAL), ("alerts", Priority.CRITICAL)]
    committed_at = parse_db_time(items[-1]["committed_at"])

    poll_bound = MIN_LOCAL_STATUS_POLL_S * (1 + jitter)
    print(f"\ncritical alert latency: {latency:.1f} s from the swap to the AlertRecord "
          f"(device read after {(read_at - swapped_at).total_seconds():.1f} s, envelope "
          f"committed after {(committed_at - swapped_at).total_seconds():.1f} s); status poll "
          f"every {MIN_LOCAL_STATUS_POLL_S} s ± {jitter:.0%} (≤ {poll_bound:.0f} s)")
    assert latency <= LATENCY_BUDGET_S


# --- a bug found on the way: the status baseline --------------------------------------


@pytest.mark.snmpsim
@pytest.mark.timeout(120)
async def test_alert_raised_between_startup_scan_and_first_status_poll(tmp_path: Path) -> None:
    """The real collector and a real simulated printer: scan (warnings only) → the
    printer jams → two status polls → the outbox must hold a CRITICAL alerts item
    (the baseline is taken right after the scan's full read, so poll 1 sees the jam
    as a change — it once became the baseline unchecked)."""
    from fleetroom_agent.runtime.app import Runtime, RuntimeParts
    from fleetroom_agent.runtime.config import parse_config

    jammed = SYNTHETIC / "alerts.snmprec"
    src = tmp_path / "recordings"
    src.mkdir()
    restate(SYNTHETIC / "alerts-warning.snmprec", jammed, src / "before.snmprec")
    with SimFleet({"printer": src / "before.snmprec"}) as fleet:
        data = tmp_path / "agent"
        data.mkdir()
        config = parse_config(f"""
[scan]
targets = ["{fleet.devices['printer'].target}"]
[status_page]
enabled = false
[[credentials]]
name = "site-v2c"
community = "public"
""", data / "agent.toml")
        sender = StandInSender()  # this reproduction stops at the outbox
        rt = Runtime(config, data, "0b4f0f5e-8d0c-4c1e-9a57-2f1b7f6fe2e2",
                     RuntimeParts(sender_factory=lambda *_: sender))
        try:
            scan = await rt.collector.discover()
            assert scan.read == 1
            assert scan.critical == 0
            fleet.swap("printer", jammed)
            await rt.collector.status_poll()
            await rt.collector.status_poll()
            critical = [i for i in rt.outbox.next_batch(100, 10_000_000)
                        if i.stream == "alerts" and i.priority == Priority.CRITICAL]
        finally:
            await rt.close()
    assert critical, "the jam was never reported"
    assert sender.wakes

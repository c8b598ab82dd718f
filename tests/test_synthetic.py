"""What the real recordings lack, on the project's own SYNTHETIC recordings
(tools/fleetsim/.../data/synthetic, labelled synthetic in their README):
alerts, a Counter32 wrap, a v1-only device missing an OID, a silent device, a
never-ending walk, and the one-PDU status cycle.

Expected values are read from the recording files by OID, and enumeration names
are those of IANA-PRINTER-MIB / RFC 3805 (cited where used).
"""

from __future__ import annotations

import asyncio

import pytest
from fleetroom_agent.collect.credentials import CredentialSet, make_credential
from fleetroom_agent.collect.status import status_check
from fleetroom_agent.scan import ScanOptions, probe_one, run_scan
from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient
from fleetroom_agent.snmp.types import Credential, Target, Timing
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC_DIR
from fleetroom_profiles import ProfileSet
from fleetroom_protocol import Reading, counter_delta
from pysnmp.proto import rfc1902

from tests.support import badagent
from tests.support import recordings as rec

PROFILES = ProfileSet.load()
TIMING = Timing(timeout=2.0, retries=1, deadline=30.0)
ALERT = "1.3.6.1.2.1.43.18.1.1"  # prtAlertEntry (RFC 3805)
LIFE = "1.3.6.1.2.1.43.10.2.1.4.1.1"  # prtMarkerLifeCount.1.1




@pytest.fixture(scope="module")
def sim():
    with SnmpSimulator([SYNTHETIC_DIR]) as s:
        yield s


def _creds(community: str, version: str = "2c") -> list[CredentialSet]:
    return [CredentialSet(make_credential(name=community, version=version,
                                          community=community))]


def _probe(sim, community: str, version: str = "2c") -> Reading:
    result = asyncio.run(probe_one(sim.endpoint, _creds(community, version), PROFILES, TIMING))
    assert isinstance(result, Reading), result
    return result


def test_alert_table_rows_are_read_with_iana_names(sim):
    r = rec.load(SYNTHETIC_DIR / "alerts.snmprec")
    reading = _probe(sim, "alerts")
    table = [a for a in reading.alerts if a.source == "prtAlertTable"]
    rows = sorted(rec.column(r, f"{ALERT}.7"))  # prtAlertCode per "1.<index>"
    assert sorted(f"1.{a.index}" for a in table) == rows
    # IANA-PRINTER-MIB PrtAlertSeverityLevelTC: critical(3), warning(4);
    # PrtAlertCodeTC: jam(8), markerTonerAlmostEmpty(1104);
    # PrtAlertGroupTC: markerSupplies(11), mediaPath(13).
    severity = {3: "critical", 4: "warning"}
    code = {8: "jam", 1104: "markerTonerAlmostEmpty"}
    group = {11: "markerSupplies", 13: "mediaPath"}
    for a in table:
        idx = f"1.{a.index}"
        assert a.severity == severity[rec.integer(r, f"{ALERT}.2.{idx}")]
        assert a.code == code[rec.integer(r, f"{ALERT}.7.{idx}")]
        assert a.group == group[rec.integer(r, f"{ALERT}.4.{idx}")]
        assert a.description == rec.text(r, f"{ALERT}.8.{idx}")
        assert a.time_ticks == rec.integer(r, f"{ALERT}.9.{idx}")
    assert {a.severity for a in table} == {"critical", "warning"}
    # hrPrinterDetectedErrorState "24 00": bits 2 (lowToner) and 5 (jammed), RFC 2790,
    # bit 0 = most significant bit of the first octet.
    assert rec.column(r, "1.3.6.1.2.1.25.3.5.1.2")["1"] == ("4x", "2400")
    assert reading.status.error_state_raw == "2400"
    assert sorted(reading.status.error_flags) == ["jammed", "lowToner"]
    assert reading.status.device_status == "down"  # hrDeviceStatus down(5)
    assert reading.status.console_text  # prtConsoleDisplayBufferText is recorded


def test_counter32_wrap_is_usage_not_a_reset(sim):
    before = _probe(sim, "counter-wrap-before")
    after = _probe(sim, "counter-wrap-wrapped")
    b = rec.integer(rec.load(SYNTHETIC_DIR / "counter-wrap-before.snmprec"), LIFE)
    a = rec.integer(rec.load(SYNTHETIC_DIR / "counter-wrap-wrapped.snmprec"), LIFE)
    assert before.counter("total") == b
    assert after.counter("total") == a
    total = next(c for c in after.counters if c.name == "total")
    assert total.width == 32  # prtMarkerLifeCount is a Counter32 (RFC 3805)
    assert counter_delta(b, a, total.width) == a + 2**32 - b
    # A big drop is not a wrap: a replaced board must not bill billions of pages.
    assert counter_delta(3_000_000_000, 1000, 32) is None


def test_v1_device_missing_one_oid_still_reads_the_rest(sim):
    r = rec.load(SYNTHETIC_DIR / "v1-missing.snmprec")
    assert "1.3.6.1.2.1.43.5.1.1.17.1" not in r  # prtGeneralSerialNumber absent
    reading = _probe(sim, "v1-missing", version="1")
    assert reading.snmp_version == "1"
    assert reading.identity.sys_descr == rec.text(r, "1.3.6.1.2.1.1.1.0")
    assert reading.counter("total") == rec.integer(r, LIFE)
    missing = {m.field: m.reason for m in reading.missing}
    assert missing.get("identity.serial") in {"not-supported", "error"}


def test_silent_device_is_reported_not_hung():
    with badagent.silent_udp_socket() as silent:
        port = silent.getsockname()[1]
        opts = ScanOptions(targets=[f"127.0.0.1:{port}"], credentials=_creds("public"),
                           timing=Timing(timeout=0.3, retries=0, deadline=5))
        outcome = asyncio.run(run_scan(opts, PROFILES))
    assert outcome.readings == []
    assert outcome.addresses == 1
    assert outcome.silent == 1
    assert outcome.not_read == []


def test_never_ending_walk_gives_an_honest_partial_reading():
    bad = badagent
    data = {
        bad.oid("1.3.6.1.2.1.1.1.0"): rfc1902.OctetString(b"Endless walker (SYNTHETIC)"),
        bad.oid("1.3.6.1.2.1.1.2.0"): rfc1902.ObjectName((1, 3, 6, 1, 4, 1, 99999)),
        bad.oid("1.3.6.1.2.1.25.3.2.1.2.1"): rfc1902.ObjectName(
            (1, 3, 6, 1, 2, 1, 25, 3, 1, 5)),
    }

    async def go() -> Reading | object:
        async with bad.BadAgent(data, faults=bad.Misbehaviour(
                endless_under=bad.oid("1.3.6.1.2.1.43.11.1.1"))) as agent:
            creds = [CredentialSet(make_credential(name="p", community="public"))]
            return await probe_one(f"127.0.0.1:{agent.port}", creds, PROFILES,
                                   Timing(timeout=1.0, retries=0, deadline=20,
                                          max_walk_rows=300))

    reading = asyncio.run(go())
    assert isinstance(reading, Reading), reading
    assert reading.identity.sys_descr == "Endless walker (SYNTHETIC)"
    assert any("1.3.6.1.2.1.43.11.1.1" in e and "max-rows" in e for e in reading.errors)


def test_status_cycle_is_one_pdu(sim):
    bad = badagent
    profile = PROFILES.resolve("hp")

    async def go() -> tuple[int, bool]:
        client = PysnmpClient()
        cred = Credential("p", community="alerts")
        async with bad.UdpTap((sim.host, sim.port)) as tap:
            target = Target("127.0.0.1", tap.port)
            first = await status_check(client, target, cred, profile, TIMING)
            tap.clear()
            second = await status_check(client, target, cred, profile, TIMING)
            sent = len(tap.sent)
        await client.close()
        return sent, second.changed_since(first)

    sent, changed = asyncio.run(go())
    assert sent == 1
    assert changed is False

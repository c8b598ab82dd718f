"""snmpsim serves every synthetic file as written (community = file stem)."""

from __future__ import annotations

import time

import pytest
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator

pytestmark = [pytest.mark.snmpsim, pytest.mark.netsnmp, pytest.mark.timeout(240),
              pytest.mark.xdist_group("fleetsim_snmpsim")]  # one simulator, one worker

LIFE = "1.3.6.1.2.1.43.10.2.1.4.1.1"
UPTIME = "1.3.6.1.2.1.1.3.0"
SERIAL = "1.3.6.1.2.1.43.5.1.1.17.1"


@pytest.fixture(scope="module")
def sim(synthetic_dir):
    with SnmpSimulator([synthetic_dir]) as s:
        yield s


def test_every_synthetic_file_walks_back_as_recorded(sim, netsnmp, recording, synthetic_dir):
    stems = sorted(p.stem for p in synthetic_dir.glob("*.snmprec"))
    assert len(stems) >= 19
    for stem in stems:
        rec = recording(stem)
        walked = netsnmp.walk(sim.endpoint, ["-v2c", "-c", stem])
        assert set(walked) == set(rec.rows), stem
        for oid in rec.rows:
            kind, value = rec.expected(oid)
            got_kind, got = walked[oid]
            assert got_kind == kind, (stem, oid)
            if not rec.is_numeric(oid):
                assert got == value, (stem, oid)
            elif stem != "counter-wrap":
                assert isinstance(got, int)
                assert isinstance(value, int)
                assert got >= value, (stem, oid)  # rising since the simulator started


def test_v1_multi_oid_get_fails_whole_on_the_missing_serial(sim, netsnmp):
    both = netsnmp.run("snmpget", ["-v1", "-c", "v1-missing", sim.endpoint,
                                   "1.3.6.1.2.1.1.1.0", SERIAL])
    assert "noSuchName" in both.stdout + both.stderr
    assert SERIAL in both.stdout + both.stderr
    one = netsnmp.get(sim.endpoint, ["1.3.6.1.2.1.1.1.0"], ["-v1", "-c", "v1-missing"])
    assert one["1.3.6.1.2.1.1.1.0"][0] == "OCTETS"


def test_demo_counter_rises(sim, netsnmp):
    auth = ["-v2c", "-c", "demo-zebra-zt411"]  # rate 2/s
    first = netsnmp.get(sim.endpoint, [LIFE], auth)[LIFE][1]
    time.sleep(1.6)
    second = netsnmp.get(sim.endpoint, [LIFE], auth)[LIFE][1]
    assert isinstance(first, int)
    assert isinstance(second, int)
    assert second > first


@pytest.mark.slow
def test_counter_wrap_follows_uptime_and_wraps(sim, netsnmp):
    """lifeCount = (4294967266 + sysUpTime/100) mod 2**32: it wraps 30 s after start."""
    auth = ["-v2c", "-c", "counter-wrap"]

    def read() -> tuple[int, int]:
        got = netsnmp.get(sim.endpoint, [UPTIME, LIFE], auth)
        ticks, life = got[UPTIME][1], got[LIFE][1]
        assert isinstance(ticks, int)
        assert isinstance(life, int)
        return ticks, life

    ticks, life = read()
    drift = (life - (4294967266 + ticks // 100)) % 2**32
    assert min(drift, 2**32 - drift) <= 1
    if ticks < 3200:
        time.sleep((3200 - ticks) / 100)
    ticks, life = read()
    assert ticks >= 3100
    assert life < 1000, "counter did not wrap to a small value"
    assert abs(life - (ticks // 100 - 30)) <= 1

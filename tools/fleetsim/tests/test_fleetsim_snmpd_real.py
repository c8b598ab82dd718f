"""SnmpdFleet over the real-printer recordings (read in place, never copied).

They live in ``../shared`` beside the checkout, not in the repository (GPL); the
test skips without them, except in CI where they must be present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleetroom_fleetsim import snmpd_fleet as sf

pytestmark = [pytest.mark.netsnmp, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]


def real_recordings() -> Path:
    env = os.environ.get("FLEETROOM_SHARED")
    d = (Path(env) if env else REPO.parent / "shared") / "fixtures" / "snmprec"
    if not d.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{d} missing in CI")
        pytest.skip("../shared/fixtures/snmprec not found (set FLEETROOM_SHARED)")
    return d


@pytest.mark.skipif(sf.snmpd_binary() is None, reason="net-snmp snmpd not installed")
def test_every_real_recording_is_served_except_what_override_cannot_carry(netsnmp, recording_at,
                                                                          loopback):
    files = sorted(real_recordings().glob("*.snmprec"))
    assert files
    with sf.SnmpdFleet(files, base=loopback(221), port=16161, versions=("2c",)) as fleet:
        kinds = set()
        for ep in fleet.endpoints:
            expected = recording_at(ep.recording)
            # a duplicated OID is served once (first value), not left out
            left_out = [s for s in fleet.skipped[ep.recording] if s.reason != "duplicate OID"]
            skipped = {s.oid for s in left_out}
            kinds |= {s.reason.split(" is ")[0] for s in left_out}
            walked = netsnmp.walk(ep.address, ["-v2c", "-c", "public"])
            assert set(walked) == set(expected.rows) - skipped, ep.recording.name
            for oid, got in walked.items():
                assert got == expected.expected(oid), (ep.recording.name, oid)
        assert kinds <= {"IpAddress", "Counter64", "Null"}, kinds

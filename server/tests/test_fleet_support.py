"""Helpers shared by the fleet tests (this module holds no tests).

Readings are produced by the real agent (``probe_one``) against snmpsim serving the
project's SYNTHETIC recordings, once per test session; expected values in the tests
are read from the recording files with the independent reader in
``tests/support/recordings.py``, never from the agent's output.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timedelta
from typing import Any

from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.services import do_create_tenant
from fleetroom_agent.collect.credentials import CredentialSet, make_credential
from fleetroom_agent.scan import probe_one
from fleetroom_agent.snmp.types import Timing
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC_DIR
from fleetroom_profiles import ProfileSet
from fleetroom_protocol import Reading

from tests.support import recordings as rec

COMMUNITIES = ("demo-ricoh-imc3000", "alerts", "alerts-warning", "counter-wrap-before",
               "counter-wrap-wrapped", "v1-missing", "demo-kyocera-m3145")
LIFE = "1.3.6.1.2.1.43.10.2.1.4.1.1"  # prtMarkerLifeCount.1.1 (RFC 3805)
SERIAL = "1.3.6.1.2.1.43.5.1.1.17.1"  # prtGeneralSerialNumber.1
IF_MAC = "1.3.6.1.2.1.2.2.1.6.1"  # ifPhysAddress.1
SUPPLY = "1.3.6.1.2.1.43.11.1.1"  # prtMarkerSuppliesEntry
COLORANT_VALUE = "1.3.6.1.2.1.43.12.1.1.4.1"  # prtMarkerColorantValue.1.<i>
ALERT = "1.3.6.1.2.1.43.18.1.1"  # prtAlertEntry


@functools.cache
def _agent_json() -> dict[str, str]:
    profiles = ProfileSet.load()
    timing = Timing(timeout=2.0, retries=1, deadline=30.0)
    out: dict[str, str] = {}
    with SnmpSimulator([SYNTHETIC_DIR]) as sim:
        for community in COMMUNITIES:
            creds = [CredentialSet(make_credential(name=community, version="2c",
                                                   community=community))]
            reading = asyncio.run(probe_one(sim.endpoint, creds, profiles, timing))
            assert isinstance(reading, Reading), reading
            out[community] = reading.to_json()
    return out


def agent_reading(community: str) -> Reading:
    """A fresh copy of the agent's reading of ``community``'s recording."""
    return Reading.model_validate_json(_agent_json()[community])


def agent_json(community: str) -> str:
    """The agent's reading as one JSON line (what ``scan --json`` prints)."""
    return _agent_json()[community]


def recording(community: str) -> dict[str, tuple[str, str]]:
    """The recording file itself, by OID."""
    return rec.load(SYNTHETIC_DIR / f"{community}.snmprec")


def mac_of(recording_: dict[str, tuple[str, str]]) -> str:
    """ifPhysAddress.1 of a recording as aa:bb:… (the recording stores hex)."""
    tag, value = recording_[IF_MAC]
    assert tag == "4x"
    return ":".join(value[i:i + 2] for i in range(0, 12, 2)).lower()


def at(reading: Reading, when: datetime, **identity: Any) -> Reading:
    """A copy taken at ``when``, with identity fields replaced."""
    copy = reading.model_copy(deep=True)
    copy.taken_at = when
    for name, value in identity.items():
        setattr(copy.identity, name, value)
    return copy


def later(reading: Reading, minutes: float, **identity: Any) -> Reading:
    """A copy taken ``minutes`` after ``reading``."""
    return at(reading, reading.taken_at + timedelta(minutes=minutes), **identity)


def make_tree() -> dict[str, Any]:
    """Operator → two dealers → customers → sites, through the tenancy services."""
    op = do_create_tenant(None, "operator", "Platform", SYSTEM)
    d1 = do_create_tenant(op, "dealer", "Dealer One", SYSTEM)
    d2 = do_create_tenant(op, "dealer", "Dealer Two", SYSTEM)
    c1 = do_create_tenant(d1, "customer", "Acme", SYSTEM)
    s1 = do_create_tenant(c1, "site", "Berlin", SYSTEM)
    s2 = do_create_tenant(c1, "site", "Hamburg", SYSTEM)
    c2 = do_create_tenant(d2, "customer", "Globex", SYSTEM)
    return {"op": op, "d1": d1, "d2": d2, "c1": c1, "s1": s1, "s2": s2, "c2": c2}

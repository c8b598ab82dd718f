"""The discovery sweep against a real simulator and silent loopback addresses."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from fleetroom_agent.discovery.sweep import SweepProbe, sweep
from fleetroom_agent.snmp.types import Target
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator, V3User

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    (d / "public.snmprec").write_text(
        "1.3.6.1.2.1.1.1.0|4|Synthetic printer for the sweep test\n"
        "1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99999.1\n")
    d.chmod(0o755)
    (d / "public.snmprec").chmod(0o644)
    with SnmpSimulator([d], v3_users=[V3User("u", "SHA", "authkey123")]) as s:
        yield s


async def _collect(targets, probes, **kw):
    return [a async for a in sweep(targets, probes, **kw)]


def test_finds_the_answering_address_among_silent_ones(sim):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never answers: a realistic dead device
    try:
        targets = [Target("127.0.0.1", silent.getsockname()[1]),
                   Target("127.0.0.1", sim.port)]
        t0 = time.monotonic()
        alive = asyncio.run(_collect(targets, [SweepProbe("2c", "public")], timeout=1.0))
        assert [a.target for a in alive] == [Target("127.0.0.1", sim.port)]
        assert time.monotonic() - t0 < 3
    finally:
        silent.close()


def test_wrong_community_is_silent(sim):
    alive = asyncio.run(_collect([Target("127.0.0.1", sim.port)],
                                 [SweepProbe("2c", "not-a-community")], timeout=0.5))
    assert alive == []


def test_v3_discovery_needs_no_credentials_and_returns_the_engine_id(sim):
    alive = asyncio.run(_collect([Target("127.0.0.1", sim.port)], [SweepProbe("3")],
                                 timeout=1.0))
    assert len(alive) == 1
    # RFC 3411 SnmpEngineID: 5 to 32 octets.
    assert alive[0].engine_id is not None
    assert 5 <= len(alive[0].engine_id) <= 32


def test_v1_probe(sim):
    alive = asyncio.run(_collect([Target("127.0.0.1", sim.port)], [SweepProbe("1", "public")],
                                 timeout=1.0))
    assert len(alive) == 1


def test_a_slow_consumer_loses_no_answer():
    """Regression: answers queued while the consumer was busy past the timeout were
    dropped, so a scan of 1,000 devices read only the first 512."""
    from pysnmp.proto import rfc1902

    from tests.support import badagent

    data = {badagent.oid("1.3.6.1.2.1.1.2.0"): rfc1902.ObjectName((1, 3, 6, 1, 4, 1, 9))}

    async def go() -> list[int]:
        agents = [badagent.BadAgent(data) for _ in range(5)]
        for a in agents:
            await a.__aenter__()
        try:
            got = []
            targets = [Target("127.0.0.1", a.port) for a in agents]
            async for hit in sweep(targets, [SweepProbe("2c", "public")], timeout=0.3):
                got.append(hit.target.port)
                await asyncio.sleep(0.5)  # busier than the sweep's whole timeout
            return sorted(got)
        finally:
            for a in agents:
                await a.__aexit__(None, None, None)

    ports = asyncio.run(go())
    assert len(ports) == 5

"""PysnmpClient against agents that misbehave, hosts that never answer, and limits.

Every test asserts a clear :class:`SnmpError` or an honest partial result within
a bounded time — never a crash or a hang (pytest-timeout backs that up).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fleetroom_agent.snmp.pysnmp_backend import MAX_GET_VARBINDS, PysnmpClient
from fleetroom_agent.snmp.types import (
    Absent,
    Credential,
    SnmpError,
    SnmpValue,
    Target,
    Timing,
    ValueType,
)
from pysnmp.proto import rfc1902

from tests.support import badagent

pytestmark = pytest.mark.timeout(60)




BadAgent = badagent.BadAgent
Misbehaviour = badagent.Misbehaviour
oid = badagent.oid

COMMUNITY = "c0mmunity-Secret"
V2C = Credential("bad-v2c", version="2c", community=COMMUNITY)
V1 = Credential("bad-v1", version="1", community=COMMUNITY)
QUICK = Timing(timeout=0.3, retries=1, deadline=10)

BIG = b"\xa5" * 60_000
# value sent by the agent -> what the client must return
TYPED: dict[str, tuple[object, SnmpValue]] = {
    "1.3.6.1.4.1.99.1.1.0": (rfc1902.Integer32(-42), SnmpValue(ValueType.INTEGER, -42)),
    "1.3.6.1.4.1.99.1.2.0": (rfc1902.Integer32(2**31 - 1),
                             SnmpValue(ValueType.INTEGER, 2**31 - 1)),
    "1.3.6.1.4.1.99.1.3.0": (rfc1902.OctetString(b"\x00\xffHP\r\n"),
                             SnmpValue(ValueType.OCTETS, b"\x00\xffHP\r\n")),
    "1.3.6.1.4.1.99.1.4.0": (rfc1902.ObjectIdentifier((1, 3, 6, 1, 4, 1, 2385, 3)),
                             SnmpValue(ValueType.OID, "1.3.6.1.4.1.2385.3")),
    "1.3.6.1.4.1.99.1.5.0": (rfc1902.IpAddress("192.0.2.17"),
                             SnmpValue(ValueType.IPADDRESS, "192.0.2.17")),
    "1.3.6.1.4.1.99.1.6.0": (rfc1902.Counter32(2**32 - 1),
                             SnmpValue(ValueType.COUNTER32, 2**32 - 1)),
    "1.3.6.1.4.1.99.1.7.0": (rfc1902.Gauge32(77), SnmpValue(ValueType.GAUGE32, 77)),
    "1.3.6.1.4.1.99.1.8.0": (rfc1902.Unsigned32(4_000_000_000),
                             SnmpValue(ValueType.GAUGE32, 4_000_000_000)),
    "1.3.6.1.4.1.99.1.9.0": (rfc1902.TimeTicks(123456), SnmpValue(ValueType.TIMETICKS, 123456)),
    "1.3.6.1.4.1.99.1.10.0": (rfc1902.Opaque(b"\x9f\x78\x04\x3f\x80\x00\x00"),
                              SnmpValue(ValueType.OPAQUE, b"\x9f\x78\x04\x3f\x80\x00\x00")),
    "1.3.6.1.4.1.99.1.11.0": (rfc1902.Counter64(2**64 - 1),
                              SnmpValue(ValueType.COUNTER64, 2**64 - 1)),
    "1.3.6.1.4.1.99.1.12.0": (rfc1902.OctetString(BIG), SnmpValue(ValueType.OCTETS, BIG)),
}
TABLE_ROOT = "1.3.6.1.4.1.99.2"
TABLE = {f"{TABLE_ROOT}.1.{i}": i * 10 for i in range(1, 31)}
AFTER = "1.3.6.1.4.1.99.3.0"


def agent_data() -> dict:
    data = {oid(k): v for k, (v, _) in TYPED.items()}
    data.update({oid(k): rfc1902.Integer32(v) for k, v in TABLE.items()})
    data[oid(AFTER)] = rfc1902.OctetString(b"after the table")
    return data


def table_rows(limit: int | None = None) -> list[tuple[str, SnmpValue]]:
    rows = [(k, SnmpValue(ValueType.INTEGER, v)) for k, v in TABLE.items()]
    return rows[:limit] if limit is not None else rows


def agent(faults: Misbehaviour | None = None, **kw) -> BadAgent:
    return BadAgent(agent_data(), community=COMMUNITY, faults=faults, **kw)


def at(a: BadAgent) -> Target:
    return Target(a.host, a.port)


@pytest.fixture
async def client():
    c = PysnmpClient()
    yield c
    await c.close()


@pytest.fixture
async def warm_client(client):
    """A client whose engine is already built (~0.15 s of CPU once per event loop,
    more on a loaded CI machine), for tests that measure how long a request takes."""
    async with agent() as a:
        await client.get(at(a), V2C, [f"{TABLE_ROOT}.1.1"])
    return client


# ---------------------------------------------------------------- a correct agent


async def test_every_value_type_converts(client):
    async with agent() as a:
        got = await client.get(at(a), V2C, list(TYPED))
    assert got == {k: want for k, (_, want) in TYPED.items()}


async def test_every_value_type_converts_v1(client):
    """v1 has no Counter64; everything else arrives the same way."""
    oids = [k for k, (v, _) in TYPED.items() if not isinstance(v, rfc1902.Counter64)]
    async with agent() as a:
        got = await client.get(at(a), V1, oids)
    assert got == {k: TYPED[k][1] for k in oids}


async def test_absent_kinds(client):
    async with agent() as a:
        got = await client.get(at(a), V2C, [f"{TABLE_ROOT}.1.99", "1.3.6.1.4.1.98.1.0"])
        end = await client.get(at(a), V2C, ["1.3.6.1.4.1.99.3.0"])
    assert got == {f"{TABLE_ROOT}.1.99": Absent.NO_SUCH_INSTANCE,
                   "1.3.6.1.4.1.98.1.0": Absent.NO_SUCH_OBJECT}
    assert isinstance(end["1.3.6.1.4.1.99.3.0"], SnmpValue)


async def test_large_get_is_split_into_pdus_of_at_most_20(client):
    async with agent() as a:
        got = await client.get(at(a), V2C, list(TABLE))
        sizes = [len(s.oids) for s in a.seen]
    assert got == dict(table_rows())
    assert max(sizes) <= MAX_GET_VARBINDS
    assert sum(sizes) == len(TABLE)


@pytest.mark.parametrize("cred", [V2C, V1], ids=["v2c-getbulk", "v1-getnext"])
async def test_walk_uses_the_right_pdu_and_stays_in_the_subtree(client, cred):
    async with agent() as a:
        result = await client.walk(at(a), cred, TABLE_ROOT, Timing(max_repetitions=7))
        kinds = {s.pdu for s in a.seen}
        reps = {s.max_repetitions for s in a.seen}
    assert result.rows == table_rows()
    assert result.stopped is None
    if cred.version == "1":
        assert kinds == {"get-next-request"}
    else:
        assert kinds == {"get-bulk-request"}
        assert reps == {7}


async def test_walk_to_end_of_mib(client):
    """The table's last OID is followed by one more object, then endOfMibView."""
    async with agent() as a:
        result = await client.walk(at(a), V2C, "1.3.6.1.4.1.99.3")
    assert result.rows == [(AFTER, SnmpValue(ValueType.OCTETS, b"after the table"))]
    assert result.stopped is None


async def test_oversize_value_arrives_intact(client):
    """A 60 KB string (near the UDP maximum) in a GET and inside a GETBULK walk."""
    key = "1.3.6.1.4.1.99.1.12.0"
    async with agent() as a:
        got = await client.get(at(a), V2C, [key])
        walked = await client.walk(at(a), V2C, "1.3.6.1.4.1.99.1", Timing(max_repetitions=3))
    assert got[key] == SnmpValue(ValueType.OCTETS, BIG)
    assert dict(walked.rows)[key].value == BIG
    assert len(walked.rows) == 12


async def test_ipv6_target(client):
    async with agent(host="::1") as a:
        got = await client.get(Target("::1", a.port), V2C, [f"{TABLE_ROOT}.1.1"])
    assert got[f"{TABLE_ROOT}.1.1"] == SnmpValue(ValueType.INTEGER, 10)


# ---------------------------------------------------------------- malformed answers


@pytest.mark.parametrize("fault", [
    Misbehaviour(truncate=True),
    Misbehaviour(garbage=True),
    Misbehaviour(wrong_request_id=True),
    Misbehaviour(echo_request=True),
], ids=["truncated", "garbage", "wrong-request-id", "request-instead-of-response"])
async def test_unusable_answers_are_a_timeout(warm_client, fault):
    """Datagrams that cannot be the answer are dropped (as if lost): the request
    times out cleanly after timeout x tries, for GET and walk alike."""
    async with agent(fault) as a:
        t0 = time.monotonic()
        with pytest.raises(SnmpError) as err:
            await warm_client.get(at(a), V2C, [f"{TABLE_ROOT}.1.1"], QUICK)
        assert err.value.kind == "timeout"
        with pytest.raises(SnmpError) as err:
            await warm_client.walk(at(a), V2C, TABLE_ROOT, QUICK)
        assert err.value.kind == "timeout"
        assert time.monotonic() - t0 < 2 * (0.3 * 2) + 1.5
        assert len(a.seen) == 4  # 2 tries each, nothing more
    assert COMMUNITY not in str(err.value)


@pytest.mark.parametrize("cred", [V2C, V1], ids=["v2c", "v1"])
async def test_non_increasing_oids_stop_the_walk(client, cred):
    faults = Misbehaviour(loop_back_at=oid(f"{TABLE_ROOT}.1.5"))
    async with agent(faults) as a:
        result = await client.walk(at(a), cred, TABLE_ROOT, Timing(max_repetitions=10))
    assert result.stopped == "not-increasing"
    assert result.rows == table_rows(4)


@pytest.mark.parametrize("cred", [V2C, V1], ids=["v2c", "v1"])
async def test_endless_walk_stops_at_max_rows(client, cred):
    root = "1.3.6.1.4.1.99.7"
    async with agent(Misbehaviour(endless_under=oid(root))) as a:
        result = await client.walk(at(a), cred, root, Timing(max_walk_rows=250))
        asked = sum(s.max_repetitions or 1 for s in a.seen)
    assert result.stopped == "max-rows"
    assert [o for o, _ in result.rows] == [f"{root}.{i}" for i in range(1, 251)]
    assert asked <= 251 + 25, "the client should not ask for far more rows than it keeps"


async def test_endless_walk_stops_at_the_deadline(warm_client):
    root = "1.3.6.1.4.1.99.7"
    faults = Misbehaviour(endless_under=oid(root), delay=0.05)
    async with agent(faults) as a:
        t0 = time.monotonic()
        result = await warm_client.walk(at(a), V2C, root,
                                   Timing(deadline=0.6, max_walk_rows=10**9, max_repetitions=5))
        elapsed = time.monotonic() - t0
    assert result.stopped == "deadline"
    assert result.rows
    assert elapsed < 0.6 + 1.0


async def test_get_where_the_agent_leaves_some_oids_out(client):
    """A v2c agent answering only part of the var-binds: the rest is asked again
    once; what still does not come back is an error, not a value."""
    wanted = [f"{TABLE_ROOT}.1.{i}" for i in range(1, 7)]
    omitted = {oid(wanted[1]), oid(wanted[4])}
    async with agent(Misbehaviour(omit=omitted)) as a:
        got = await client.get(at(a), V2C, wanted)
        pdus = [s.oids for s in a.seen]
    for key in wanted:
        if oid(key) in omitted:
            assert got[key] == Absent.ERROR
        else:
            assert got[key] == SnmpValue(ValueType.INTEGER, TABLE[key])
    assert pdus == [[oid(k) for k in wanted], sorted(omitted)]


async def test_v1_no_such_name_for_one_oid(client):
    """SNMPv1 fails the whole PDU (noSuchName, index of the culprit); the client
    drops that OID and asks again for the rest: 2 PDUs, not 1 + n."""
    wanted = [f"{TABLE_ROOT}.1.1", f"{TABLE_ROOT}.1.2", "1.3.6.1.4.1.99.1.99.0",
              f"{TABLE_ROOT}.1.3", "1.3.6.1.4.1.99.1.9.0"]
    async with agent() as a:
        got = await client.get(at(a), V1, wanted)
        pdus = [len(s.oids) for s in a.seen]
    assert got["1.3.6.1.4.1.99.1.99.0"] == Absent.ERROR
    assert got[f"{TABLE_ROOT}.1.3"] == SnmpValue(ValueType.INTEGER, 30)
    assert got["1.3.6.1.4.1.99.1.9.0"] == TYPED["1.3.6.1.4.1.99.1.9.0"][1]
    assert pdus == [5, 4]


async def test_error_without_index_falls_back_to_one_oid_per_pdu(client):
    wanted = [f"{TABLE_ROOT}.1.{i}" for i in range(1, 5)]
    async with agent(Misbehaviour(error_status=(5, 0))) as a:  # genErr, no index
        got = await client.get(at(a), V2C, wanted)
        pdus = [len(s.oids) for s in a.seen]
    assert got == dict(table_rows(4))
    assert pdus == [4, 1, 1, 1, 1]


async def test_too_big_splits_the_pdu(client):
    wanted = [f"{TABLE_ROOT}.1.{i}" for i in range(1, 11)]
    async with agent(Misbehaviour(too_big_over=3)) as a:
        got = await client.get(at(a), V2C, wanted)
    assert got == dict(table_rows(10))


async def test_device_dies_during_walk(client):
    """Two GETBULKs answered, then silence: the rows so far, stopped='timeout'."""
    async with agent(Misbehaviour(answer_first=2)) as a:
        result = await client.walk(at(a), V2C, TABLE_ROOT, Timing(timeout=0.3, retries=1,
                                                                   max_repetitions=4))
    assert result.stopped == "timeout"
    assert result.rows == table_rows(8)


async def test_device_dies_during_large_get(client):
    """First PDU answered, then silence: honest partial result, not an exception."""
    wanted = list(TABLE)
    async with agent(Misbehaviour(answer_first=1)) as a:
        got = await client.get(at(a), V2C, wanted, QUICK)
    first = wanted[:MAX_GET_VARBINDS]
    assert {k: got[k] for k in first} == {k: v for k, v in table_rows() if k in first}
    assert {got[k] for k in wanted[MAX_GET_VARBINDS:]} == {Absent.NO_RESPONSE}


# ---------------------------------------------------------------- no answer at all


@pytest.mark.parametrize("version", ["1", "2c", "3"])
async def test_silent_host_times_out_in_time(warm_client, version):
    cred = (Credential("silent-v3", version="3", user="ops", auth_proto="SHA256",
                       auth_key="auth-Secret-4711", priv_proto="AES256",
                       priv_key="priv-Secret-0815")
            if version == "3" else Credential("silent", version=version, community=COMMUNITY))
    timing = Timing(timeout=0.4, retries=2, deadline=30)
    with badagent.silent_udp_socket() as sock:
        t0 = time.monotonic()
        with pytest.raises(SnmpError) as err:
            await warm_client.get(Target("127.0.0.1", sock.getsockname()[1]), cred,
                             ["1.3.6.1.2.1.1.1.0"], timing)
        elapsed = time.monotonic() - t0
    assert err.value.kind == "timeout"
    assert 0.4 * 3 - 0.1 <= elapsed < 0.4 * 3 + 1.0
    assert "3 tries" in str(err.value)
    for secret in (COMMUNITY, "auth-Secret-4711", "priv-Secret-0815"):
        assert secret not in str(err.value)


async def test_silent_host_walk_times_out(client):
    with badagent.silent_udp_socket() as sock, pytest.raises(SnmpError) as err:
        await client.walk(Target("127.0.0.1", sock.getsockname()[1]), V2C, "1.3.6", QUICK)
    assert err.value.kind == "timeout"


async def test_closed_port_is_an_error_not_a_hang(warm_client):
    port = badagent.closed_udp_port()
    t0 = time.monotonic()
    with pytest.raises(SnmpError) as err:
        await warm_client.get(Target("127.0.0.1", port), V2C, ["1.3.6.1.2.1.1.1.0"], QUICK)
    assert err.value.kind in ("timeout", "error")
    assert time.monotonic() - t0 < 0.3 * 2 + 1.0


async def test_deadline_before_any_answer(warm_client):
    """The deadline bounds the whole operation even when timeout x retries is longer."""
    with badagent.silent_udp_socket() as sock:
        t0 = time.monotonic()
        with pytest.raises(SnmpError) as err:
            await warm_client.get(Target("127.0.0.1", sock.getsockname()[1]), V2C,
                             ["1.3.6.1.2.1.1.1.0"], Timing(timeout=5, retries=3, deadline=0.5))
        elapsed = time.monotonic() - t0
    assert err.value.kind == "deadline"
    assert 0.45 <= elapsed < 1.2


async def test_deadline_after_some_answers_keeps_them(warm_client):
    wanted = list(TABLE)  # two PDUs, each answered after 0.4 s
    async with agent(Misbehaviour(delay=0.4)) as a:
        got = await warm_client.get(at(a), V2C, wanted, Timing(timeout=2, retries=0, deadline=0.6))
    first = wanted[:MAX_GET_VARBINDS]
    assert all(isinstance(got[k], SnmpValue) for k in first)
    assert {got[k] for k in wanted[MAX_GET_VARBINDS:]} == {Absent.NO_RESPONSE}


# ---------------------------------------------------------------- limits and lifecycle


async def test_concurrency_is_bounded():
    """12 GETs at once through a client allowing 3: the device never sees more than
    3 outstanding requests, and all 12 succeed."""
    limited = PysnmpClient(max_in_flight=3)
    try:
        async with agent(Misbehaviour(delay=0.15)) as a:
            results = await asyncio.gather(*(
                limited.get(at(a), V2C, [f"{TABLE_ROOT}.1.{i}"]) for i in range(1, 13)))
            assert a.max_outstanding == 3
    finally:
        await limited.close()
    assert all(isinstance(next(iter(r.values())), SnmpValue) for r in results)


async def test_close_fails_pending_requests():
    c = PysnmpClient()
    with badagent.silent_udp_socket() as sock:
        job = asyncio.create_task(c.get(Target("127.0.0.1", sock.getsockname()[1]), V2C,
                                        ["1.3.6.1.2.1.1.1.0"], Timing(timeout=10, retries=0)))
        await asyncio.sleep(0.2)
        await c.close()
        with pytest.raises(SnmpError) as err:
            await asyncio.wait_for(job, 2)
    assert err.value.kind == "error"


async def test_close_releases_the_socket():
    psutil = pytest.importorskip("psutil")

    def udp_sockets() -> int:
        return len(psutil.Process().net_connections(kind="udp"))

    c = PysnmpClient()
    async with agent() as a:
        before = udp_sockets()
        await c.get(at(a), V2C, [f"{TABLE_ROOT}.1.1"])
        await c.get(at(a), V1, [f"{TABLE_ROOT}.1.2"])
        assert udp_sockets() == before + 1, "one shared socket for all requests"
        await c.close()
        for _ in range(10):
            await asyncio.sleep(0.01)
            if udp_sockets() == before:
                break
        assert udp_sockets() == before


async def test_client_is_usable_after_close(client):
    async with agent() as a:
        await client.get(at(a), V2C, [f"{TABLE_ROOT}.1.1"])
        await client.close()
        got = await client.get(at(a), V2C, [f"{TABLE_ROOT}.1.2"])
    assert got[f"{TABLE_ROOT}.1.2"] == SnmpValue(ValueType.INTEGER, 20)


async def test_one_engine_per_event_loop(client):
    """The same client used from another event loop (another thread) gets its own
    engine there instead of touching this loop's sockets."""
    async with agent() as a:
        here = await client.get(at(a), V2C, [f"{TABLE_ROOT}.1.1"])

        def elsewhere() -> dict:
            async def run() -> dict:
                return await client.get(at(a), V2C, [f"{TABLE_ROOT}.1.1"])
            return asyncio.run(run())

        there = await asyncio.to_thread(elsewhere)
    assert here == there


async def test_bad_input_fails_before_sending(client):
    with pytest.raises(ValueError, match="numeric OID"):
        await client.get(Target("127.0.0.1", 161), V2C, ["sysDescr.0"])
    with pytest.raises(ValueError, match="numeric OID"):
        await client.walk(Target("127.0.0.1", 161), V2C, "1.3.x")
    with pytest.raises(SnmpError) as err:
        await client.get(Target("printer.example", 161), V2C, ["1.3.6.1.2.1.1.1.0"])
    assert err.value.kind == "error"
    with pytest.raises(ValueError, match="timing"):
        await client.get(Target("127.0.0.1", 161), V2C, ["1.3.6.1.2.1.1.1.0"],
                         Timing(timeout=0))
    assert await client.get(Target("127.0.0.1", 161), V2C, []) == {}

"""``walk_many``: all of a device's subtrees in one stream of PDUs.

Against the misbehaving agent of ``tests/support/badagent.py``: every subtree must
come back exactly as a walk of its own would return it (expected rows are the
agent's data, filtered here by prefix), in far fewer PDUs, and a fault in one
subtree must stay in that subtree — never a crash, a hang or a row from the wrong
place.
"""

from __future__ import annotations

import time

import pytest
from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient
from fleetroom_agent.snmp.types import (
    Credential,
    SnmpError,
    SnmpValue,
    Target,
    Timing,
    ValueType,
    WalkResult,
)
from pysnmp.proto import rfc1902

from tests.support import badagent

pytestmark = pytest.mark.timeout(60)

BadAgent = badagent.BadAgent
Misbehaviour = badagent.Misbehaviour
oid = badagent.oid

COMMUNITY = "walk-many"
V2C = Credential("wm-v2c", version="2c", community=COMMUNITY)
V1 = Credential("wm-v1", version="1", community=COMMUNITY)
BOTH = pytest.mark.parametrize("cred", [V2C, V1], ids=["v2c", "v1"])

BASE = "1.3.6.1.4.1.99"
# Three tables with data between them that nobody asks for (gaps), and one
# subtree that is empty, the way a printer's MIB looks to a walk of its tables.
DATA: dict[str, int] = {}
DATA.update({f"{BASE}.1.1.{i}": i for i in range(1, 4)})            # table A: 3 rows
DATA.update({f"{BASE}.2.{i}.1": 100 + i for i in range(1, 41)})      # gap: 40 rows
DATA.update({f"{BASE}.3.1.{c}.{r}": c * 10 + r for c in (1, 2) for r in range(1, 16)})  # B
DATA.update({f"{BASE}.4.{i}": 200 + i for i in range(1, 6)})         # gap: 5 rows
DATA.update({f"{BASE}.6.1.{i}": 300 + i for i in range(1, 8)})      # table C: 7 rows
DATA[f"{BASE}.9.0"] = 999                                           # the last object
ROOT_A, ROOT_B, ROOT_C = f"{BASE}.1.1", f"{BASE}.3.1", f"{BASE}.6.1"
ROOT_EMPTY = f"{BASE}.5"  # between B and C, nothing there
ROOTS = [ROOT_A, ROOT_B, ROOT_EMPTY, ROOT_C]


def rows_under(root: str) -> list[tuple[str, SnmpValue]]:
    """The expected rows: the agent's data under ``root``, in SNMP order."""
    keys = sorted((k for k in DATA if k.startswith(root + ".")), key=oid)
    return [(k, SnmpValue(ValueType.INTEGER, DATA[k])) for k in keys]


def agent(faults: Misbehaviour | None = None) -> BadAgent:
    return BadAgent({oid(k): rfc1902.Integer32(v) for k, v in DATA.items()},
                    community=COMMUNITY, faults=faults)


def at(a: BadAgent) -> Target:
    return Target(a.host, a.port)


@pytest.fixture
async def client():
    c = PysnmpClient()
    yield c
    await c.close()


def complete(got: dict[str, WalkResult | SnmpError], *roots: str) -> None:
    for root in roots:
        result = got[root]
        assert isinstance(result, WalkResult), (root, result)
        assert result.stopped is None, root
        assert result.rows == rows_under(root), root


# ---------------------------------------------------------------- a correct agent


@BOTH
async def test_every_subtree_as_its_own_walk_would_give_it(client, cred):
    async with agent() as a:
        got = await client.walk_many(at(a), cred, ROOTS, Timing(max_repetitions=10))
        single = {r: await client.walk(at(a), cred, r, Timing(max_repetitions=10))
                  for r in ROOTS}
    complete(got, *ROOTS)
    assert got == single


async def test_v2c_is_one_getbulk_stream_that_jumps_the_gaps(client):
    """One var-bind per GETBULK; the 40-row gap after table A costs one answer at
    most, not a walk through it, and the stream never starts inside a gap."""
    async with agent() as a:
        got = await client.walk_many(at(a), V2C, ROOTS, Timing(max_repetitions=10))
        seen = list(a.seen)
    complete(got, *ROOTS)
    assert {s.pdu for s in seen} == {"get-bulk-request"}
    assert all(len(s.oids) == 1 for s in seen)
    starts = [badagent.oid(ROOT_A), badagent.oid(ROOT_B), badagent.oid(ROOT_EMPTY),
              badagent.oid(ROOT_C)]
    cursors = [s.oids[0] for s in seen]
    gap = badagent.oid(f"{BASE}.2")
    assert not [c for c in cursors if c[:len(gap)] == gap], "walked into the gap"
    assert cursors[0] == starts[0]
    # 3 + 30 + 7 rows at 10 per answer, plus the gap answers: far below 4 walks of their own
    assert len(seen) <= 7


async def test_v1_walks_the_subtrees_side_by_side(client):
    """GETNEXT with one var-bind per unfinished subtree: as many PDUs as the
    longest subtree has rows (plus the last look), not the sum of all."""
    async with agent() as a:
        got = await client.walk_many(at(a), V1, ROOTS)
        seen = list(a.seen)
    complete(got, *ROOTS)
    assert {s.pdu for s in seen} == {"get-next-request"}
    assert len(seen[0].oids) == len(ROOTS)
    assert len(seen) <= len(rows_under(ROOT_B)) + 2


@BOTH
async def test_to_the_end_of_the_mib(client, cred):
    """The last subtree runs into endOfMibView (v2c) / noSuchName (v1): a clean end."""
    roots = [ROOT_C, f"{BASE}.9", f"{BASE}.10"]
    async with agent() as a:
        got = await client.walk_many(at(a), cred, roots)
    complete(got, *roots)
    assert got[f"{BASE}.9"].rows == [(f"{BASE}.9.0", SnmpValue(ValueType.INTEGER, 999))]


@BOTH
async def test_nested_duplicate_and_dotted_roots(client, cred):
    """A root inside another is served from the outer walk; keys are the caller's."""
    inner = f"{ROOT_B}.2"
    roots = [f".{ROOT_A}", ROOT_B, inner, ROOT_B]
    async with agent() as a:
        got = await client.walk_many(at(a), cred, roots, Timing(max_repetitions=6))
        asked = {c for s in a.seen for c in s.oids}
    assert set(got) == {f".{ROOT_A}", ROOT_B, inner}
    assert got[f".{ROOT_A}"].rows == rows_under(ROOT_A)
    assert got[ROOT_B].rows == rows_under(ROOT_B)
    assert got[inner].rows == rows_under(inner)
    assert oid(inner) not in asked, "the nested root is not walked again"


async def test_no_roots(client):
    assert await client.walk_many(Target("127.0.0.1", 9), V2C, []) == {}


# ---------------------------------------------------------------- faults stay local


@BOTH
async def test_a_never_ending_subtree_stops_at_max_rows_and_the_rest_is_read(client, cred):
    """(The agent answers anything before the endless subtree with its first row,
    so the endless subtree comes first here.)"""
    endless = f"{BASE}.3.1.1"
    faults = Misbehaviour(endless_under=oid(endless))
    roots = [endless, ROOT_C]
    async with agent(faults) as a:
        got = await client.walk_many(at(a), cred, roots, Timing(max_walk_rows=40))
    complete(got, ROOT_C)
    assert got[endless].stopped == "max-rows"
    assert [o for o, _ in got[endless].rows] == [f"{endless}.{i}" for i in range(1, 41)]


@BOTH
async def test_a_subtree_going_backwards_is_cut_and_the_rest_is_read(client, cred):
    faults = Misbehaviour(loop_back_at=oid(f"{ROOT_B}.1.5"))
    async with agent(faults) as a:
        got = await client.walk_many(at(a), cred, [ROOT_A, ROOT_B, ROOT_C])
    complete(got, ROOT_A, ROOT_C)
    assert got[ROOT_B].stopped == "not-increasing"
    assert got[ROOT_B].rows == rows_under(ROOT_B)[:4]


@BOTH
async def test_an_error_status_in_one_subtree(client, cred):
    faults = Misbehaviour(error_under=oid(ROOT_B))
    async with agent(faults) as a:
        got = await client.walk_many(at(a), cred, [ROOT_A, ROOT_B, ROOT_C],
                                     Timing(max_repetitions=2))
    complete(got, ROOT_A, ROOT_C)
    assert got[ROOT_B].stopped == "error"


async def test_an_empty_getbulk_answer_in_one_subtree(client):
    faults = Misbehaviour(empty_under=oid(ROOT_B))
    async with agent(faults) as a:
        got = await client.walk_many(at(a), V2C, [ROOT_A, ROOT_B, ROOT_C],
                                     Timing(max_repetitions=3))
    complete(got, ROOT_A, ROOT_C)
    assert got[ROOT_B].stopped == "error"


async def test_too_big_halves_the_repetitions(client):
    async with agent(Misbehaviour(bulk_too_big_over=4)) as a:
        got = await client.walk_many(at(a), V2C, ROOTS, Timing(max_repetitions=20))
        reps = [s.max_repetitions for s in a.seen]
    complete(got, *ROOTS)
    assert reps[:3] == [20, 10, 5]
    assert set(reps[3:]) <= {1, 2, 3, 4}


async def test_too_big_even_for_one_row(client):
    async with agent(Misbehaviour(bulk_too_big_over=0)) as a:
        got = await client.walk_many(at(a), V2C, [ROOT_A, ROOT_C], Timing(max_repetitions=8))
    assert got[ROOT_A].stopped == "error"
    assert got[ROOT_C].stopped == "error"


# ---------------------------------------------------------------- the device goes away


async def test_device_dies_mid_stream(client):
    """Two answers, then silence: the subtree being read keeps its rows
    (stopped='timeout'); subtrees never reached say why they have nothing."""
    async with agent(Misbehaviour(answer_first=2)) as a:
        got = await client.walk_many(at(a), V2C, [ROOT_A, ROOT_B, ROOT_C],
                                     Timing(timeout=0.3, retries=1, max_repetitions=8))
    complete(got, ROOT_A)
    assert got[ROOT_B].stopped == "timeout"
    assert got[ROOT_B].rows == rows_under(ROOT_B)[:len(got[ROOT_B].rows)]
    assert got[ROOT_B].rows
    unreached = got[ROOT_C]
    assert isinstance(unreached, SnmpError)
    assert unreached.kind == "timeout"
    assert COMMUNITY not in str(unreached)


async def test_v1_device_dies_mid_walk(client):
    """Table A has 3 rows: the 4th answer shows it ended; then silence."""
    async with agent(Misbehaviour(answer_first=4)) as a:
        got = await client.walk_many(at(a), V1, [ROOT_A, ROOT_B],
                                     Timing(timeout=0.3, retries=0))
    complete(got, ROOT_A)
    assert got[ROOT_B].stopped == "timeout"
    assert got[ROOT_B].rows == rows_under(ROOT_B)[:4]


@BOTH
async def test_silent_device_raises(client, cred):
    with badagent.silent_udp_socket() as sock, pytest.raises(SnmpError) as err:
        await client.walk_many(Target("127.0.0.1", sock.getsockname()[1]), cred, ROOTS,
                               Timing(timeout=0.2, retries=1))
    assert err.value.kind == "timeout"


async def test_deadline_mid_stream_keeps_what_came(client):
    faults = Misbehaviour(endless_under=oid(ROOT_B), delay=0.05)
    async with agent(faults) as a:
        t0 = time.monotonic()
        got = await client.walk_many(at(a), V2C, [ROOT_B, ROOT_C],
                                     Timing(deadline=0.5, max_walk_rows=10**9,
                                            max_repetitions=5))
        elapsed = time.monotonic() - t0
    assert elapsed < 0.5 + 1.0
    assert got[ROOT_B].stopped == "deadline"
    assert got[ROOT_B].rows
    assert isinstance(got[ROOT_C], SnmpError)
    assert got[ROOT_C].kind == "deadline"


# ---------------------------------------------------------------- through the Reader


def recording_data(stem: str) -> dict[tuple[int, ...], object]:
    """A SYNTHETIC demo recording as agent data (parsed by the tests' own reader;
    a ``numeric`` variation serves its initial value, as snmpd_fleet does)."""
    from fleetroom_fleetsim.synthetic import DATA_DIR

    from tests.support.recordings import load

    makers = {2: lambda r, b: rfc1902.Integer32(int(r)),
              4: lambda r, b: rfc1902.OctetString(b),
              6: lambda r, b: rfc1902.ObjectIdentifier(r),
              64: lambda r, b: rfc1902.IpAddress(b if len(b) == 4 else r),
              65: lambda r, b: rfc1902.Counter32(int(r)),
              66: lambda r, b: rfc1902.Gauge32(int(r)),
              67: lambda r, b: rfc1902.TimeTicks(int(r)),
              70: lambda r, b: rfc1902.Counter64(int(r))}
    data = {}
    for key, (tag, text) in load(DATA_DIR / f"{stem}.snmprec").items():
        base, _, module = tag.partition(":")
        raw = dict(kv.split("=", 1) for kv in text.split(","))["initial"] if module else text
        payload = bytes.fromhex(raw) if base.endswith("x") else raw.encode("latin-1")
        data[oid(key)] = makers[int(base.rstrip("x"))](raw, payload)
    return data


@pytest.mark.parametrize("answers", [None, 3])
async def test_reader_over_one_stream(client, answers):
    """A full read through the Reader (identify GET, profile GET + one stream): with
    a healthy device nothing is missing for want of an answer and every supply row
    of the recording (prtMarkerSuppliesClass, 43.11.1.1.4) is there; with a device
    that dies after 3 answers the reading is partial and honest — what was never
    reached is missing as *timeout*, not as *not supported*."""
    from fleetroom_agent.collect.credentials import CredentialMemory, CredentialSet
    from fleetroom_agent.collect.reader import Reader
    from fleetroom_profiles import ProfileSet
    from fleetroom_protocol import Reading

    data = recording_data("demo-hp-clj-m479")
    supplies = [k for k in data if k[:11] == (1, 3, 6, 1, 2, 1, 43, 11, 1, 1, 4)]
    faults = Misbehaviour(answer_first=answers)
    async with BadAgent(data, community=COMMUNITY, faults=faults) as a:
        reader = Reader(client, ProfileSet.load(), [CredentialSet(V2C)], CredentialMemory(),
                        Timing(timeout=0.3, retries=0, max_repetitions=25))
        reading = await reader.read(at(a))
    assert isinstance(reading, Reading)
    assert reading.identity.sys_descr == data[oid("1.3.6.1.2.1.1.1.0")].asOctets().decode()
    timed_out = [m.field for m in reading.missing if m.reason == "timeout"]
    if answers is None:
        assert not timed_out
        assert not reading.errors
        assert len(reading.supplies) == len(supplies)
    else:
        assert timed_out

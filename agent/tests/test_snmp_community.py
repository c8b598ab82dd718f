"""The engine-less SNMPv1/v2c path: message encoding/decoding and answer matching.

* Property tests (hypothesis): whatever bytes arrive, :func:`decode_response`
  returns a Response or raises :class:`BadMessage` — nothing else escapes; values
  survive a round trip through pysnmp's encoder (expected values are built here
  from the generated Python values, not by the code under test); requests decode
  back, with pysnmp's own decoder, to exactly what was asked.
* On the wire (``tests/support/badagent.py``): answers that cannot be ours are
  dropped and the timeout says so; late answers to an earlier try are accepted;
  answers to many devices in flight are never mixed up.
"""

from __future__ import annotations

import asyncio

import pytest
from fleetroom_agent.snmp.community import BadMessage, Response, decode_response, encode_request
from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient
from fleetroom_agent.snmp.types import (
    Absent,
    Credential,
    SnmpError,
    SnmpValue,
    Target,
    Timing,
    ValueType,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api, rfc1902, rfc1905

from tests.support import badagent

pytestmark = pytest.mark.timeout(120)

V1 = api.PROTOCOL_MODULES[api.SNMP_VERSION_1]
V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

sub_ids = st.integers(min_value=0, max_value=2**32 - 1)
oids = st.tuples(st.integers(0, 2), st.integers(0, 39)).flatmap(
    lambda head: st.lists(sub_ids, min_size=0, max_size=14).map(lambda tail: (*head, *tail)))

# (pysnmp value to send, the value we must get back) — built independently here
values = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(
        lambda n: (rfc1902.Integer32(n), SnmpValue(ValueType.INTEGER, n))),
    st.binary(max_size=300).map(
        lambda b: (rfc1902.OctetString(b), SnmpValue(ValueType.OCTETS, b))),
    st.binary(max_size=40).map(lambda b: (rfc1902.Opaque(b), SnmpValue(ValueType.OPAQUE, b))),
    oids.map(lambda o: (rfc1902.ObjectIdentifier(o),
                        SnmpValue(ValueType.OID, ".".join(map(str, o))))),
    st.binary(min_size=4, max_size=4).map(
        lambda b: (rfc1902.IpAddress(b), SnmpValue(ValueType.IPADDRESS,
                                                   ".".join(str(x) for x in b)))),
    st.integers(0, 2**32 - 1).map(
        lambda n: (rfc1902.Counter32(n), SnmpValue(ValueType.COUNTER32, n))),
    st.integers(0, 2**32 - 1).map(lambda n: (rfc1902.Gauge32(n), SnmpValue(ValueType.GAUGE32, n))),
    st.integers(0, 2**32 - 1).map(
        lambda n: (rfc1902.TimeTicks(n), SnmpValue(ValueType.TIMETICKS, n))),
    st.integers(0, 2**64 - 1).map(
        lambda n: (rfc1902.Counter64(n), SnmpValue(ValueType.COUNTER64, n))),
    st.just((rfc1902.Null(""), SnmpValue(ValueType.NULL, b""))),
    st.sampled_from([(rfc1905.noSuchObject, Absent.NO_SUCH_OBJECT),
                     (rfc1905.noSuchInstance, Absent.NO_SUCH_INSTANCE),
                     (rfc1905.endOfMibView, Absent.END_OF_MIB)]),
)
communities = st.binary(min_size=0, max_size=40)
request_ids = st.integers(0, 2**31 - 1)


def response_bytes(community: bytes, request_id: int, status: int, index: int,
                   var_binds: list[tuple[tuple[int, ...], object]], version: int = 1) -> bytes:
    """A Response message built with pysnmp's API, as an agent would send it."""
    p = V2C if version == 1 else V1
    pdu = p.GetResponsePDU()
    p.apiPDU.set_defaults(pdu)
    p.apiPDU.set_request_id(pdu, request_id)
    p.apiPDU.set_error_status(pdu, status)
    p.apiPDU.set_error_index(pdu, index)
    p.apiPDU.set_varbinds(pdu, [(rfc1902.ObjectName(o), v) for o, v in var_binds])
    msg = p.Message()
    p.apiMessage.set_defaults(msg)
    p.apiMessage.set_community(msg, community)
    p.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


SAMPLE = response_bytes(b"public", 4711, 0, 0, [
    ((1, 3, 6, 1, 2, 1, 1, 1, 0), rfc1902.OctetString(b"Printer \x00\xff")),
    ((1, 3, 6, 1, 2, 1, 1, 3, 0), rfc1902.TimeTicks(123)),
    ((1, 3, 6, 1, 2, 1, 43, 10, 2, 1, 4, 1, 1), rfc1902.Counter32(2**32 - 1)),
    ((1, 3, 6, 1, 4, 1, 9), rfc1902.Counter64(2**64 - 1)),
    ((1, 3, 6, 1, 4, 1, 10), rfc1905.endOfMibView),
])


# ---------------------------------------------------------------- codec properties


@FUZZ
@given(community=communities, request_id=request_ids,
       var_binds=st.lists(st.tuples(oids, values), max_size=12),
       status=st.integers(0, 18), index=st.integers(0, 12))
def test_response_round_trip(community, request_id, var_binds, status, index):
    data = response_bytes(community, request_id, status, index,
                          [(o, sent) for o, (sent, _) in var_binds])
    got = decode_response(data)
    assert got == Response(1, community, request_id, status, index,
                           [(o, want) for o, (_, want) in var_binds])


@FUZZ
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_as_anything_but_bad_message(data):
    try:
        got: Response | None = decode_response(data)
    except BadMessage as exc:
        got, why = None, str(exc)
    if got is None:
        assert why
    else:
        assert isinstance(got, Response)


@FUZZ
@given(cut=st.integers(0, len(SAMPLE) - 1))
def test_every_truncation_is_a_bad_message(cut):
    with pytest.raises(BadMessage):
        decode_response(SAMPLE[:cut])


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)),
                      min_size=1, max_size=6),
       extra=st.binary(max_size=8))
def test_mutated_answers_decode_or_are_bad_messages(edits, extra):
    data = bytearray(SAMPLE)
    for pos, byte in edits:
        data[pos] = byte
    try:
        got = decode_response(bytes(data) + extra)
    except BadMessage:
        return
    assert isinstance(got, Response)
    for oid, value in got.var_binds:
        assert isinstance(oid, tuple)
        assert isinstance(value, SnmpValue | Absent)


def test_trailing_bytes_and_requests_are_rejected():
    with pytest.raises(BadMessage):
        decode_response(SAMPLE + b"\x00")  # bytes after the message
    request = encode_request(1, b"public", 5, "get", [(1, 3, 6, 1, 2, 1, 1, 1, 0)])
    with pytest.raises(BadMessage, match="get-request PDU, not a Response"):
        decode_response(request)
    v3ish = bytearray(SAMPLE)
    v3ish[4] = 3  # the version INTEGER's value: SNMPv3 is not ours to parse here
    with pytest.raises(BadMessage, match="version"):
        decode_response(bytes(v3ish))


@FUZZ
@given(version=st.sampled_from([0, 1]), community=communities, request_id=request_ids,
       kind=st.sampled_from(["get", "next", "bulk"]),
       asked=st.lists(oids, min_size=1, max_size=20), reps=st.integers(0, 200))
def test_requests_decode_to_what_was_asked(version, community, request_id, kind, asked,
                                           reps):
    if kind == "bulk" and version == 0:
        with pytest.raises(ValueError, match="GetBulkRequest"):
            encode_request(version, community, request_id, kind, asked, reps)
        return
    wire = encode_request(version, community, request_id, kind, asked, reps)
    p = V1 if version == 0 else V2C
    assert int(api.decodeMessageVersion(wire)) == version
    msg, rest = decoder.decode(wire, asn1Spec=p.Message())
    assert rest == b""
    pdu = p.apiMessage.get_pdu(msg)
    assert bytes(p.apiMessage.get_community(msg)) == community
    assert msg["data"].getName() == {"get": "get-request", "next": "get-next-request",
                                     "bulk": "get-bulk-request"}[kind]
    assert int(p.apiPDU.get_request_id(pdu)) == request_id
    assert [(tuple(o), v.tagSet) for o, v in p.apiPDU.get_varbinds(pdu)] == [
        (o, rfc1902.Null.tagSet) for o in asked]
    if kind == "bulk":
        assert int(V2C.apiBulkPDU.get_non_repeaters(pdu)) == 0
        assert int(V2C.apiBulkPDU.get_max_repetitions(pdu)) == reps


# ---------------------------------------------------------------- on the wire

COMMUNITY = "channel-Secret"
CRED = Credential("chan", version="2c", community=COMMUNITY)
QUICK = Timing(timeout=0.3, retries=1, deadline=10)
ROW = "1.3.6.1.4.1.99.1.0"


def agent(faults: badagent.Misbehaviour | None = None, value: int = 7) -> badagent.BadAgent:
    return badagent.BadAgent({badagent.oid(ROW): rfc1902.Integer32(value)},
                             community=COMMUNITY, faults=faults)


@pytest.fixture
async def client():
    c = PysnmpClient()
    yield c
    await c.close()


@pytest.mark.parametrize(("fault", "why"), [
    (badagent.Misbehaviour(truncate=True), "malformed or truncated"),
    (badagent.Misbehaviour(garbage=True), "not an SNMP message"),
    (badagent.Misbehaviour(wrong_request_id=True), "wrong request-id"),
    (badagent.Misbehaviour(echo_request=True), "not a Response"),
    (badagent.Misbehaviour(wrong_community=True), "another SNMP version or community"),
    (badagent.Misbehaviour(wrong_version=True), "another SNMP version or community"),
], ids=["truncated", "garbage", "wrong-request-id", "request-echoed", "wrong-community",
        "wrong-version"])
async def test_unusable_answers_are_dropped_and_the_timeout_says_why(client, fault, why):
    async with agent(fault) as a:
        with pytest.raises(SnmpError) as err:
            await client.get(Target(a.host, a.port), CRED, [ROW], QUICK)
    assert err.value.kind == "timeout"
    message = str(err.value)
    assert "2 tries" in message
    assert "unusable datagrams from the device dropped" in message
    assert why in message
    assert COMMUNITY not in message


async def test_an_answer_from_another_port_is_not_accepted(client):
    """Same host, other source port: not the address we asked, so not our answer."""
    async with agent(badagent.Misbehaviour(answer_from_other_port=True)) as a:
        with pytest.raises(SnmpError) as err:
            await client.get(Target(a.host, a.port), CRED, [ROW], QUICK)
        assert len(a.seen) == 2
    assert err.value.kind == "timeout"


async def test_a_late_answer_to_the_first_try_is_taken(client):
    """Answered after 0.45 s with a 0.3 s timeout: the retry goes out, and the first
    answer (same request-id) arriving during the second wait completes the GET."""
    async with agent(badagent.Misbehaviour(delay=0.45)) as a:
        got = await client.get(Target(a.host, a.port), CRED, [ROW],
                               Timing(timeout=0.3, retries=1))
        assert len(a.seen) == 2
    assert got[ROW] == SnmpValue(ValueType.INTEGER, 7)


async def test_many_devices_in_flight_never_mix_answers(client):
    """Eight agents, each with its own value, 80 GETs at once over one socket."""
    agents = [agent(badagent.Misbehaviour(delay=0.01 * (i % 3)), value=1000 + i)
              for i in range(8)]
    for a in agents:
        await a.__aenter__()
    try:
        jobs = [client.get(Target(a.host, a.port), CRED, [ROW])
                for _ in range(10) for a in agents]
        results = await asyncio.gather(*jobs)
    finally:
        for a in agents:
            await a.__aexit__()
    for i, got in enumerate(results):
        assert got[ROW] == SnmpValue(ValueType.INTEGER, 1000 + i % 8)


async def test_a_community_pysnmp_cannot_send_is_an_error_not_a_crash(client):
    cred = Credential("odd", version="2c", community="Gemeinschaft→")
    with pytest.raises(SnmpError) as err:
        await client.get(Target("127.0.0.1", 9), cred, [ROW])
    assert err.value.kind == "auth"
    assert "Latin-1" in str(err.value)

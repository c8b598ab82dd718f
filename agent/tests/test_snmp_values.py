"""Offline checks of the pysnmp back-end: value conversion, OID parsing, protocol
mapping, concurrency default.  No network."""

from __future__ import annotations

import asyncio
from typing import get_args

import pytest
from fleetroom_agent.snmp.pysnmp_backend import (
    AUTH_PROTOCOLS,
    PRIV_PROTOCOLS,
    PysnmpClient,
    default_max_in_flight,
    parse_oid,
    to_result,
)
from fleetroom_agent.snmp.types import Absent, AuthProto, PrivProto, SnmpValue, ValueType
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.secmod.eso.priv.aesbase import AbstractAesBlumenthal, AbstractAesReeder
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel


@pytest.mark.parametrize(("value", "expected"), [
    (rfc1902.Integer(-1), SnmpValue(ValueType.INTEGER, -1)),
    (rfc1902.Integer32(7), SnmpValue(ValueType.INTEGER, 7)),
    (rfc1902.OctetString(b"\x20\x00"), SnmpValue(ValueType.OCTETS, b"\x20\x00")),
    (rfc1902.OctetString(""), SnmpValue(ValueType.OCTETS, b"")),
    (rfc1902.Bits(b"\x80"), SnmpValue(ValueType.OCTETS, b"\x80")),
    (rfc1902.Opaque(b"\x9f\x78"), SnmpValue(ValueType.OPAQUE, b"\x9f\x78")),
    (rfc1902.ObjectIdentifier("1.3.6.1.4.1.11.2.3.9.1"),
     SnmpValue(ValueType.OID, "1.3.6.1.4.1.11.2.3.9.1")),
    (rfc1902.ObjectIdentifier("0.0"), SnmpValue(ValueType.OID, "0.0")),
    (rfc1902.IpAddress("10.0.0.254"), SnmpValue(ValueType.IPADDRESS, "10.0.0.254")),
    (rfc1902.IpAddress(b"\xc0\xa8\x01\x01"), SnmpValue(ValueType.IPADDRESS, "192.168.1.1")),
    (rfc1902.Counter32(4294967295), SnmpValue(ValueType.COUNTER32, 4294967295)),
    (rfc1902.Gauge32(0), SnmpValue(ValueType.GAUGE32, 0)),
    (rfc1902.Unsigned32(12), SnmpValue(ValueType.GAUGE32, 12)),
    (rfc1902.TimeTicks(724425094), SnmpValue(ValueType.TIMETICKS, 724425094)),
    (rfc1902.Counter64(2**64 - 1), SnmpValue(ValueType.COUNTER64, 2**64 - 1)),
    (rfc1902.Null(""), SnmpValue(ValueType.NULL, b"")),
    (rfc1905.noSuchObject, Absent.NO_SUCH_OBJECT),
    (rfc1905.noSuchInstance, Absent.NO_SUCH_INSTANCE),
    (rfc1905.endOfMibView, Absent.END_OF_MIB),
])
def test_to_result(value, expected):
    got = to_result(value)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("1.3.6.1.2.1.1.1.0", (1, 3, 6, 1, 2, 1, 1, 1, 0)),
    (".1.3.6", (1, 3, 6)),
    ("1.3.6.1.4.1.4294967295", (1, 3, 6, 1, 4, 1, 4294967295)),
])
def test_parse_oid(text, expected):
    assert parse_oid(text) == expected


@pytest.mark.parametrize("text", ["", "1", "sysDescr.0", "1.3..6", "1.3.6.", "..1.3",
                                  "1.3.-6", "3.1", "1.3.4294967296", "1.3.６", " 1.3"])
def test_parse_oid_rejects(text):
    with pytest.raises(ValueError, match="OID"):
        parse_oid(text)


def test_every_protocol_name_is_mapped():
    assert set(AUTH_PROTOCOLS) == set(get_args(AuthProto))
    assert set(PRIV_PROTOCOLS) == set(get_args(PrivProto))
    services = SnmpUSMSecurityModel.AUTH_SERVICES
    assert all(oid in services for oid in AUTH_PROTOCOLS.values())


@pytest.mark.parametrize(("name", "family", "key_size"), [
    ("AES192", AbstractAesBlumenthal, 24),
    ("AES256", AbstractAesBlumenthal, 32),
    ("AES192C", AbstractAesReeder, 24),
    ("AES256C", AbstractAesReeder, 32),
])
def test_aes_key_extension_mapping(name, family, key_size):
    """Our AES192/AES256 are the Blumenthal key extension (as in net-snmp), the C
    variants Reeder's — pysnmp's unqualified AES192/256 constants are Reeder."""
    service = SnmpUSMSecurityModel.PRIV_SERVICES[PRIV_PROTOCOLS[name]]
    assert isinstance(service, family)
    assert key_size == service.KEY_SIZE


def test_default_concurrency_follows_cpus():
    assert default_max_in_flight(1) == 32
    assert default_max_in_flight(2) == 64
    assert default_max_in_flight(64) == 64
    assert default_max_in_flight() in range(8, 65)
    assert PysnmpClient(max_in_flight=5).max_in_flight == 5
    with pytest.raises(ValueError, match="max_in_flight"):
        PysnmpClient(max_in_flight=0)


async def test_user_gate_never_mixes_secrets_for_one_user_name():
    """Same user name, two sets of secrets: never both in use at once, same secrets
    share, other user names are not held up, and every operation gets its turn."""
    from fleetroom_agent.snmp.pysnmp_backend import _UserGate

    gate = _UserGate()
    active: dict[tuple[str, bytes], int] = {}
    log: list[tuple[str, bytes]] = []
    overlap_same = 0

    async def op(user: str, fp: bytes, hold: float) -> None:
        nonlocal overlap_same
        async with gate.hold((user, fp)):
            others = [k for k, n in active.items() if n and k[0] == user and k[1] != fp]
            assert not others, f"{user}: {fp!r} ran together with {others}"
            active[(user, fp)] = active.get((user, fp), 0) + 1
            overlap_same = max(overlap_same, active[(user, fp)])
            log.append((user, fp))
            await asyncio.sleep(hold)
            active[(user, fp)] -= 1

    jobs = [op("admin", b"one" if i % 2 else b"two", 0.01) for i in range(20)]
    jobs += [op("other", b"x", 0.01) for _ in range(5)]
    jobs += [op("admin", b"one", 0.01) for _ in range(5)]
    await asyncio.wait_for(asyncio.gather(*jobs), 5)
    assert len(log) == 30
    assert overlap_same > 1
    async with gate.hold(None):  # v1/v2c: no gate
        pass

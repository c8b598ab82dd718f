"""pysnmp/pyasn1 value objects as our :class:`~.types.SnmpValue` / :class:`~.types.Absent`.

Shared by the two pysnmp-based paths (the engine for SNMPv3 and the engine-less
community channel for v1/v2c), so both convert every received value the same way.
"""

from __future__ import annotations

from typing import Any, Final

from pysnmp.proto import rfc1902, rfc1905

from .types import Absent, Result, SnmpValue, ValueType

__all__ = ["dotted", "to_result"]

_ABSENT_BY_TAG: Final = {
    rfc1905.NoSuchObject.tagSet: Absent.NO_SUCH_OBJECT,
    rfc1905.NoSuchInstance.tagSet: Absent.NO_SUCH_INSTANCE,
    rfc1905.EndOfMibView.tagSet: Absent.END_OF_MIB,
}
_INT_TYPES: Final = {
    rfc1902.Integer32.tagSet: ValueType.INTEGER,  # same tag as INTEGER
    rfc1902.Counter32.tagSet: ValueType.COUNTER32,
    rfc1902.Gauge32.tagSet: ValueType.GAUGE32,  # same tag as Unsigned32
    rfc1902.TimeTicks.tagSet: ValueType.TIMETICKS,
    rfc1902.Counter64.tagSet: ValueType.COUNTER64,
}
_OCTET_TYPES: Final = {
    rfc1902.OctetString.tagSet: ValueType.OCTETS,  # also BITS
    rfc1902.Opaque.tagSet: ValueType.OPAQUE,
}
_OID_TAG: Final = rfc1902.ObjectIdentifier.tagSet
_IPADDRESS_TAG: Final = rfc1902.IpAddress.tagSet
_NULL_TAG: Final = rfc1902.Null.tagSet


def dotted(oid: tuple[int, ...]) -> str:
    """``(1, 3, 6)`` -> ``"1.3.6"``."""
    return ".".join(map(str, oid))


def to_result(value: Any) -> Result:
    """One received pysnmp value as :class:`SnmpValue`, or why there is none.

    Types are told apart by their BER tag, not ``isinstance``: ``IpAddress`` and
    ``Opaque`` are subclasses of ``OctetString`` and the counters of ``Integer``, so
    class checks would depend on their order."""
    tag = value.tagSet
    kind = _INT_TYPES.get(tag)
    if kind is not None:
        return SnmpValue(kind, int(value))
    kind = _OCTET_TYPES.get(tag)
    if kind is not None:
        return SnmpValue(kind, value.asOctets())
    if tag == _OID_TAG:
        return SnmpValue(ValueType.OID, dotted(value.asTuple()))
    if tag == _IPADDRESS_TAG:
        return SnmpValue(ValueType.IPADDRESS, ".".join(str(b) for b in value.asOctets()))
    if tag == _NULL_TAG:
        return SnmpValue(ValueType.NULL, b"")
    absent = _ABSENT_BY_TAG.get(tag)
    if absent is not None:
        return absent
    return Absent.ERROR  # a type SNMP does not define: never pass it on as data

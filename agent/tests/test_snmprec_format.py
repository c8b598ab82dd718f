"""The snmprec writer/reader used by ``walk`` and ``probe --recording``."""

from __future__ import annotations

from fleetroom_agent.snmp.types import SnmpValue, ValueType
from fleetroom_agent.snmprec import format_line, parse_line, redact, write_recording
from hypothesis import given
from hypothesis import strategies as st

values = st.one_of(
    st.builds(SnmpValue, st.just(ValueType.INTEGER), st.integers(-(2**31), 2**31 - 1)),
    st.builds(SnmpValue, st.just(ValueType.COUNTER32), st.integers(0, 2**32 - 1)),
    st.builds(SnmpValue, st.just(ValueType.COUNTER64), st.integers(0, 2**64 - 1)),
    st.builds(SnmpValue, st.just(ValueType.TIMETICKS), st.integers(0, 2**32 - 1)),
    st.builds(SnmpValue, st.just(ValueType.OCTETS), st.binary(max_size=64)),
    st.builds(SnmpValue, st.just(ValueType.IPADDRESS),
              st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))),
)


@given(values)
def test_round_trip(value):
    parsed = parse_line(format_line("1.3.6.1.2.1.1.1.0", value))
    assert parsed == ("1.3.6.1.2.1.1.1.0", value)


def test_order_is_numeric_not_textual():
    rows = [("1.3.6.1.10.1", SnmpValue(ValueType.INTEGER, 1)),
            ("1.3.6.1.9.1", SnmpValue(ValueType.INTEGER, 2))]
    assert [line.split("|")[0] for line in write_recording(rows)] == ["1.3.6.1.9.1",
                                                                       "1.3.6.1.10.1"]


def test_binary_octets_are_hex():
    assert format_line("1.2", SnmpValue(ValueType.OCTETS, b"\x00\x14\x22")) == "1.2|4x|001422"


def test_redact_blanks_identity_and_embedded_serials():
    serial = redact("1.3.6.1.2.1.43.5.1.1.17.1", SnmpValue(ValueType.OCTETS, b"CNB1234567"))
    assert serial.value == b"REDACTED"
    descr = redact("1.3.6.1.2.1.1.1.0",
                   SnmpValue(ValueType.OCTETS, b"HP ETHERNET,SN:VNCRC48198,FN:4Q817L4"))
    assert b"VNCRC48198" not in descr.value
    assert descr.value.startswith(b"HP ETHERNET")
    vendor = redact("1.3.6.1.4.1.1.2.3", SnmpValue(ValueType.OCTETS, b"ABC999"),
                    ["1.3.6.1.4.1.1.2.3"])
    assert vendor.value == b"REDACTED"
    count = SnmpValue(ValueType.COUNTER32, 5)
    assert redact("1.3.6.1.2.1.43.10.2.1.4.1.1", count) == count

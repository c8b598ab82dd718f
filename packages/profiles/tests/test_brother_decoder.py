"""The Brother brInfoCounter decoder: hand-derived expectations, and fuzzing.

Layout (bieniu/brother, see decoders/brother.py): records ``code · 0x01 · length ·
value`` followed by one trailer octet that the source drops.
"""

from __future__ import annotations

import os

import pytest
from fleetroom_profiles.decoders import DecodedCounter, get_decoder
from fleetroom_profiles.decoders.brother import COUNTER_CODES, decode_brother_counters
from hypothesis import given
from hypothesis import strategies as st

from tests.support.recordings import load, recordings_dir

BR_INFO_COUNTER = "1.3.6.1.4.1.2435.2.3.9.4.2.1.5.5.10.0"
HP_SERIAL_NUMBER = "1.3.6.1.4.1.11.2.3.9.4.2.1.1.3.3.0"


def test_registered_under_its_profile_name():
    assert get_decoder("brother_counters") is decode_brother_counters


def test_dcp_l3550cdw_blob_decoded_by_hand():
    # The counter records of a DCP-L3550CDW as published in bieniu/brother
    # tests/fixtures/dcp-l3550cdw.json (key 1.3.6.1.4.1.2435.2.3.9.4.2.1.5.5.10.0, the
    # library's 7-octet chunks after dropping the trailer), with the trailer 0xff
    # put back as the library's own sample blob ends:
    blob = bytes.fromhex(
        "0001040000064b"  # code 00 type 01 len 04 value 0x0000064b = 6*256 + 75  = 1611
        "02010400000386"  # code 02 type 01 len 04 value 0x00000386 = 3*256 + 134 =  902
        "010104000002c5"  # code 01 type 01 len 04 value 0x000002c5 = 2*256 + 197 =  709
        "0601040000021a"  # code 06 type 01 len 04 value 0x0000021a = 2*256 + 26  =  538
        "080104000000ed"  # code 08 type 01 len 04 value 0x000000ed =           237 (no name)
        "0701040000012d"  # code 07 type 01 len 04 value 0x0000012d = 1*256 + 45  =  301 (no name)
        "ff"              # trailer
    )
    result = decode_brother_counters(blob)
    assert result.problems == []
    assert result.counters == [
        DecodedCounter("00", 1611, "total", "page counter"),
        DecodedCounter("02", 902, "colour", "colour counter"),
        DecodedCounter("01", 709, "mono", "black-and-white counter"),
        DecodedCounter("06", 538, "duplex", "duplex unit pages counter"),
        DecodedCounter("08", 237, None, None),
        DecodedCounter("07", 301, None, None),
    ]
    # Cross-check that needs no source: mono + colour = total (709 + 902 = 1611).
    by_name = {c.name: c.value for c in result.counters if c.name}
    assert by_name["mono"] + by_name["colour"] == by_name["total"]


def test_hl_l2340dw_single_record_decoded_by_hand():
    # bieniu/brother tests/fixtures/hl-l2340dw.json: one chunk "000104000003da",
    # i.e. code 00, value 0x000003da = 3*256 + 218 = 986; trailer 0xff appended.
    result = decode_brother_counters(bytes.fromhex("000104000003da" "ff"))
    assert result.problems == []
    assert result.counters == [DecodedCounter("00", 986, "total", "page counter")]


def _brother_recording() -> dict[str, tuple[str, str]] | None:
    d = recordings_dir()
    if d is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("../shared/fixtures/snmprec is missing in CI")
        return None
    return load(d / "brother.snmprec")


def test_brother_recording_has_no_counter_blob():
    """brother.snmprec (LibreNMS, MFC-L2710DW) does not contain brInfoCounter.0, so the
    decoder cannot be checked against it: when a recording with the blob arrives, add a
    hand-derived test like the DCP-L3550CDW one above."""
    rec = _brother_recording()
    if rec is None:
        pytest.skip("../shared/fixtures/snmprec not found")
    assert BR_INFO_COUNTER not in rec
    assert not any(o.startswith("1.3.6.1.4.1.2435.2.3.9.4.2.1.5.5.10") for o in rec)


def test_real_octets_that_are_no_counter_blob_give_a_problem_not_an_exception():
    # The one packed OCTET STRING in brother.snmprec is HP-LASERJET-COMMON-MIB
    # serial-number: 01 15 55 36 34 … 0a 33 32.  Read as a counter blob, the trailer
    # is the last octet (0x32) and the first record header is code 0x01, type 0x15:
    # not 0x01, so decoding stops there with nothing decoded.
    rec = _brother_recording()
    if rec is None:
        pytest.skip("../shared/fixtures/snmprec not found")
    tag, value = rec[HP_SERIAL_NUMBER]
    assert tag == "4x"
    raw = bytes.fromhex(value)
    assert raw[:2] == b"\x01\x15"
    result = decode_brother_counters(raw)
    assert result.counters == []
    assert result.problems == ["record at octet 0: type octet 0x15, expected 0x01; rest ignored"]


@pytest.mark.parametrize(("raw", "problem"), [
    (b"", "empty value"),
    (b"\xff", "no counter records before the trailer octet"),
    (bytes.fromhex("0001"), "record at octet 0: 1 octet(s) left, a header needs 3; rest ignored"),
    (bytes.fromhex("000104000003ff"), "record at octet 0: value of 4 octets runs past the end; "
                                      "rest ignored"),
    (bytes.fromhex("00010c00ff"), "record at octet 0: value length 12 outside 1..8; "
                                  "rest ignored"),
])
def test_malformed_blobs(raw, problem):
    result = decode_brother_counters(raw)
    assert result.problems == [problem]
    assert result.counters == []


def test_records_before_a_broken_one_are_kept():
    # 00 01 04 00000001 (total = 1), then a record with type 0x02, then the trailer.
    result = decode_brother_counters(bytes.fromhex("00010400000001" "010204000000" "ff"))
    assert result.counters == [DecodedCounter("00", 1, "total", "page counter")]
    assert result.problems == ["record at octet 7: type octet 0x02, expected 0x01; rest ignored"]


def test_a_code_given_twice_keeps_the_first_as_named():
    result = decode_brother_counters(bytes.fromhex("00010400000001" "00010400000002" "ff"))
    assert [(c.key, c.value, c.name) for c in result.counters] == [("00", 1, "total"),
                                                                   ("00", 2, None)]
    assert result.problems == ["code 00 appears twice; later value kept as raw only"]


def test_not_bytes_is_a_problem():
    assert decode_brother_counters("0001040000000aff").problems == [  # type: ignore[arg-type]
        "not an octet string: str"]


@given(st.binary(max_size=300))
def test_never_raises_on_random_octets(raw):
    result = decode_brother_counters(raw)
    for c in result.counters:
        assert isinstance(c.value, int)
        assert c.value >= 0
        assert len(c.key) == 2
        assert c.name is None or c.name == COUNTER_CODES[int(c.key, 16)][0]
    assert all(isinstance(p, str) and p for p in result.problems)
    assert result.counters or result.problems


records = st.lists(st.tuples(st.integers(0, 255), st.integers(1, 8).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, 2 ** (8 * n) - 1)))), max_size=20,
    unique_by=lambda r: r[0])


@given(records, st.integers(0, 255))
def test_well_formed_blobs_round_trip(recs, trailer):
    raw = b"".join(bytes([code, 0x01, n]) + value.to_bytes(n, "big")
                   for code, (n, value) in recs) + bytes([trailer])
    result = decode_brother_counters(raw)
    if recs:
        assert result.problems == []
    assert [(int(c.key, 16), c.value) for c in result.counters] == [
        (code, value) for code, (_, value) in recs]

"""The wire model: strict, versioned, honest about levels, usage across a Counter32 wrap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fleetroom_protocol import Counter, Reading, Supply, counter_delta
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError


def _reading(**kw):
    return Reading(taken_at=datetime(2026, 11, 23, tzinfo=UTC), target="127.0.0.1",
                   snmp_version="2c", **kw)


def test_round_trip_uses_wire_names():
    r = _reading(supplies=[Supply(index=1, class_="consumed", type="toner", raw_level=50,
                                  raw_max=100, level_percent=50.0)],
                 counters=[Counter(name="total", value=10, source="x", width=32)])
    wire = r.to_json()
    assert '"schema":"fleetroom.reading/1"' in wire
    assert '"class":"consumed"' in wire
    assert Reading.model_validate_json(wire) == r


def test_unknown_fields_and_versions_are_refused():
    wire = _reading().model_dump(by_alias=True, mode="json")
    with pytest.raises(ValidationError):
        Reading.model_validate({**wire, "surprise": 1})
    with pytest.raises(ValidationError):
        Reading.model_validate({**wire, "schema": "fleetroom.reading/2"})


def test_negative_counters_are_refused():
    with pytest.raises(ValidationError):
        Counter(name="total", value=-3, source="x")


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_counter32_delta(old, new):
    d = counter_delta(old, new, 32)
    if new >= old:
        assert d == new - old
    elif new + 2**32 - old < 2**30:
        assert d == new + 2**32 - old
    else:
        assert d is None  # too large to be a wrap: a reset or a replaced device


def test_no_width_no_wrap_guess():
    assert counter_delta(100, 5, None) is None

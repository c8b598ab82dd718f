"""Supply levels: a percentage only from real numbers; sentinels become states (RFC 3805)."""

from __future__ import annotations

import pytest
from fleetroom_agent.collect.supplies import (
    consumable_state,
    level_percent,
    receptacle_state,
)
from fleetroom_protocol import CoarseState, Supply
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("level", "capacity", "percent", "state"),
    [
        (50, 100, 50.0, CoarseState.OK),
        (3000, 12000, 25.0, CoarseState.OK),
        (10, 100, 10.0, CoarseState.LOW),
        (0, 100, 0.0, CoarseState.EMPTY),
        (-3, 100, None, CoarseState.SOME_REMAINING),  # RFC 3805: -3 some remaining
        (-2, 100, None, CoarseState.UNKNOWN),  # -2 unknown
        (-1, 100, None, CoarseState.UNKNOWN),  # -1 other / no restriction
        (40, -2, None, CoarseState.UNKNOWN),  # capacity unknown: no percentage
        (40, -1, None, CoarseState.UNKNOWN),
        (0, -2, None, CoarseState.EMPTY),  # zero is zero whatever the capacity
        (150, 100, None, CoarseState.UNKNOWN),  # above capacity: a device bug, not 150 %
        (None, None, None, CoarseState.UNKNOWN),
    ],
)
def test_consumable(level, capacity, percent, state):
    assert level_percent(level, capacity) == percent
    assert consumable_state(level, capacity) is state


@pytest.mark.parametrize(
    ("remaining", "capacity", "state"),
    [
        (-3, -2, CoarseState.OK),  # some space remaining
        (0, 100, CoarseState.FULL),
        (5, 100, CoarseState.ALMOST_FULL),
        (80, 100, CoarseState.OK),
        (-2, 100, CoarseState.UNKNOWN),
    ],
)
def test_receptacle(remaining, capacity, state):
    assert receptacle_state(remaining, capacity) is state


@given(st.integers(-5, 10**9), st.integers(-5, 10**9))
def test_percent_is_never_invented(level, capacity):
    pct = level_percent(level, capacity)
    if level < 0 or capacity <= 0 or level > capacity:
        assert pct is None
    else:
        assert pct is not None
        assert 0 <= pct <= 100


def test_supply_model_refuses_percent_without_real_numbers():
    with pytest.raises(ValidationError):
        Supply(index=1, level_percent=50.0, raw_level=-3, raw_max=100)
    with pytest.raises(ValidationError):
        Supply(index=1, level_percent=50.0, raw_level=50, raw_max=-2)

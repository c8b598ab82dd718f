"""Supply and tray levels, honestly.

RFC 3805 gives prtMarkerSuppliesLevel and prtMarkerSuppliesMaxCapacity with
sentinels: -1 "other" (no restriction), -2 "unknown", -3 "some remaining" (for a
receptacle: some space remaining).  A percentage is only computed from a real
level and a real, positive capacity; everything else becomes a coarse state with
the raw numbers kept.  (LibreNMS shows -3 as 50 %; we never do.)

For a *receptacle* (class receptacleThatIsFilled, e.g. waste toner) the level is
the remaining *space*, so ``level_percent`` is the free space and the states are
ok / almost-full / full.
"""

from __future__ import annotations

from fleetroom_protocol import CoarseState

LOW_PERCENT = 10.0
"""At or below this remaining share a consumable is "low" (and a receptacle "almost
full").  10 % matches what most vendors' own low-toner warnings use."""

OTHER, UNKNOWN, SOME_REMAINING = -1, -2, -3


def level_percent(level: int | None, capacity: int | None) -> float | None:
    """Remaining share in percent, or ``None`` when the numbers are not real.

    A level above capacity is a device bug, not 120 %: no percentage then.
    """
    if level is None or capacity is None or level < 0 or capacity <= 0 or level > capacity:
        return None
    return round(level * 100.0 / capacity, 1)


def _state(level: int | None, capacity: int | None, *, none_left: CoarseState,
           little_left: CoarseState, some_left: CoarseState) -> CoarseState:
    """The shared sentinel logic; only the names of the states differ by class."""
    if level is None:
        return CoarseState.UNKNOWN
    if level == SOME_REMAINING:
        return some_left
    if level < 0:
        return CoarseState.UNKNOWN
    if level == 0:
        return none_left
    pct = level_percent(level, capacity)
    if pct is None:
        return CoarseState.UNKNOWN
    return little_left if pct <= LOW_PERCENT else CoarseState.OK


def consumable_state(level: int | None, capacity: int | None) -> CoarseState:
    """State of a consumed supply (toner, ink, drum life, staples)."""
    return _state(level, capacity, none_left=CoarseState.EMPTY, little_left=CoarseState.LOW,
                  some_left=CoarseState.SOME_REMAINING)


def receptacle_state(level: int | None, capacity: int | None) -> CoarseState:
    """State of a receptacle (waste toner box): the level is the space left, so no
    space is "full" and some space (-3) is simply "ok"."""
    return _state(level, capacity, none_left=CoarseState.FULL,
                  little_left=CoarseState.ALMOST_FULL, some_left=CoarseState.OK)


def tray_state(level: int | None, capacity: int | None) -> CoarseState:
    """State of an input tray (prtInputCurrentLevel/MaxCapacity, same sentinels)."""
    return consumable_state(level, capacity)

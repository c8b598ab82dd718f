"""The anti-replay window: new, replayed and too-old counters."""

from fleetroom_protocol.replay import WINDOW, ReplayState
from hypothesis import given
from hypothesis import strategies as st


def test_first_counter_is_new_and_repeat_is_replay():
    verdict, state = ReplayState().check(0)
    assert verdict == "new"
    assert state.check(0)[0] == "replayed"


def test_out_of_order_within_window_is_accepted_once():
    state = ReplayState()
    for ctr in (10, 12, 11):
        verdict, state = state.check(ctr)
        assert verdict == "new"
    for ctr in (10, 11, 12):
        assert state.check(ctr)[0] == "replayed"
    assert state.check(9)[0] == "new"


def test_older_than_window_is_too_old():
    _, state = ReplayState().check(WINDOW + 100)
    assert state.check(99)[0] == "too-old"
    assert state.check(101)[0] == "new"


def test_text_round_trip():
    state = ReplayState()
    for ctr in (5, 3, 900, 901):
        _, state = state.check(ctr)
    assert ReplayState.from_text(state.to_text()) == state
    assert ReplayState.from_text("") == ReplayState()


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=200))
def test_each_counter_accepted_at_most_once(counters):
    state = ReplayState()
    accepted: list[int] = []
    for ctr in counters:
        verdict, state = state.check(ctr)
        if verdict == "new":
            accepted.append(ctr)
        state = ReplayState.from_text(state.to_text())
    assert len(accepted) == len(set(accepted))
    # Every distinct counter that was never too old was accepted exactly once.
    for ctr in set(counters):
        if ctr in accepted:
            continue
        assert max(counters) - ctr >= WINDOW or ctr not in counters

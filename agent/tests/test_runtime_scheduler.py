"""The scheduler: jitter bounds, server-steered changes, and a wall clock that lies.

Time is an input here: a clock object whose monotonic and wall readings the test
sets, so "a year later" or "the clock jumped back a day" take no real time.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fleetroom_agent.runtime.config import LocalSchedule
from fleetroom_agent.runtime.scheduler import (
    MEMORY_FILE,
    MONTH_END_WINDOW_S,
    SCHEDULE_FILE,
    Effective,
    Scheduler,
    ScheduleStore,
    daily_due,
    jittered,
    month_end_key,
)
from fleetroom_protocol.messages import MAX_METER_READ_S, MIN_STATUS_POLL_S, Schedule
from pydantic import ValidationError

TZ = timezone(timedelta(hours=1))


class FakeClock:
    """Monotonic and wall time set by the test."""

    def __init__(self, wall: datetime) -> None:
        self.mono = 1000.0
        self.wall = wall

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


class Recorder:
    """The jobs the scheduler starts; each call is recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def status_poll(self) -> None:
        self.calls.append("status")

    async def meter_read(self) -> None:
        self.calls.append("meter")

    async def month_end_read(self, month: str) -> None:
        self.calls.append(f"month-end:{month}")

    async def rediscover(self) -> None:
        self.calls.append("rediscover")

    async def profile_check(self) -> None:
        self.calls.append("profile-check")


def make(tmp_path: Path, clock: FakeClock, schedule: Schedule | None = None,
         local: LocalSchedule | None = None, seed: int = 1) -> tuple[Scheduler, Recorder]:
    jobs = Recorder()
    store = ScheduleStore(tmp_path, local or LocalSchedule(), schedule)
    sched = Scheduler(jobs, store, tmp_path, clock=clock, rng=random.Random(seed))
    sched.start()
    return sched, jobs


def job(s: Scheduler, name: str):
    return next(j for j in s.interval_jobs if j.name == name)


def test_jitter_stays_within_bounds_and_spreads():
    rng = random.Random(7)
    for interval, jitter in [(300, 0.1), (3 * 3600, 0.5), (60, 0.0)]:
        draws = [jittered(interval, jitter, rng) for _ in range(5000)]
        assert min(draws) >= interval * (1 - jitter)
        assert max(draws) <= interval * (1 + jitter)
        if jitter:
            # spread over the whole window, not clumped at the interval
            below = sum(d < interval * (1 - jitter / 2) for d in draws)
            above = sum(d > interval * (1 + jitter / 2) for d in draws)
            assert below > 500
            assert above > 500


def test_intervals_follow_the_schedule_with_jitter(tmp_path):
    clock = FakeClock(datetime(2025, 3, 10, 12, 0, tzinfo=TZ))
    sched, _ = make(tmp_path, clock, Schedule(version=1, status_poll_s=300, jitter=0.2))
    status = job(sched, "status-poll")
    gaps = []
    for _ in range(200):
        clock.mono = status.next_due
        before = clock.mono
        due = sched.due_interval_jobs(clock.mono)
        assert status in due
        gaps.append(status.next_due - before)
    assert min(gaps) >= 240
    assert max(gaps) <= 360
    assert len({round(g) for g in gaps}) > 20  # really jittered


def test_startup_scan_comes_first(tmp_path):
    clock = FakeClock(datetime(2025, 3, 10, 12, 0, tzinfo=TZ))
    sched, _ = make(tmp_path, clock)
    assert job(sched, "rediscovery").next_due - clock.mono <= 5
    assert job(sched, "status-poll").next_due - clock.mono >= 300 * 0.9
    assert job(sched, "meter-read").next_due - clock.mono >= 86400 * 0.9


def test_server_schedule_change_takes_effect_and_persists(tmp_path):
    clock = FakeClock(datetime(2025, 3, 10, 12, 0, tzinfo=TZ))
    sched, _ = make(tmp_path, clock, Schedule(version=3, status_poll_s=900, jitter=0.0))
    status = job(sched, "status-poll")
    assert status.next_due - clock.mono == pytest.approx(900)
    clock.advance(100)
    new = Schedule(version=4, status_poll_s=120, meter_read_s=3 * 3600, jitter=0.0)
    assert sched.store.apply(new)
    # counted from the start (no run yet): now due 120 s after "now" at the latest
    assert status.next_due <= clock.mono + 120
    assert job(sched, "meter-read").next_due <= clock.mono + 3 * 3600
    # persisted: a restart starts with version 4, not the enrollment's schedule
    again = ScheduleStore(tmp_path, LocalSchedule(), Schedule(version=1))
    assert again.schedule == new
    assert Schedule.model_validate_json((tmp_path / SCHEDULE_FILE).read_text()) == new


def test_older_or_same_version_is_ignored(tmp_path):
    store = ScheduleStore(tmp_path, LocalSchedule(), Schedule(version=5, status_poll_s=600))
    assert not store.apply(Schedule(version=5, status_poll_s=60))
    assert not store.apply(Schedule(version=2, status_poll_s=60))
    assert store.schedule.status_poll_s == 600
    assert not (tmp_path / SCHEDULE_FILE).exists()


def test_protocol_limits_bound_the_server(tmp_path):
    with pytest.raises(ValidationError):
        Schedule(version=9, status_poll_s=MIN_STATUS_POLL_S - 1)
    with pytest.raises(ValidationError):
        Schedule(version=9, meter_read_s=MAX_METER_READ_S + 1)
    # a tampered file on disk is not trusted either
    (tmp_path / SCHEDULE_FILE).write_text('{"version": 9, "status_poll_s": 1}')
    store = ScheduleStore(tmp_path, LocalSchedule(), Schedule(version=2))
    assert store.schedule.version == 2


def test_local_ceiling_on_the_status_interval(tmp_path):
    eff = Effective.of(Schedule(status_poll_s=600), LocalSchedule(max_status_poll_s=30))
    assert eff.status_poll_s == 30
    eff = Effective.of(Schedule(status_poll_s=60), LocalSchedule(max_status_poll_s=300))
    assert eff.status_poll_s == 60
    eff = Effective.of(Schedule(profile_check="03:30"), LocalSchedule(profile_check="22:15"))
    assert eff.profile_check == "22:15"


def test_month_end_window():
    assert month_end_key(datetime(2025, 11, 30, 21, 0, tzinfo=TZ)) == "2025-11"
    assert month_end_key(datetime(2025, 11, 30, 19, 59, tzinfo=TZ)) is None
    assert month_end_key(datetime(2025, 12, 31, 23, 59, tzinfo=TZ)) == "2025-12"
    assert month_end_key(datetime(2024, 2, 29, 22, 0, tzinfo=TZ)) == "2024-02"
    assert month_end_key(datetime(2025, 2, 28, 22, 0, tzinfo=TZ)) == "2025-02"
    assert month_end_key(datetime(2025, 12, 1, 0, 0, tzinfo=TZ)) is None


def test_month_end_read_fires_once_despite_clock_jumps(tmp_path):
    clock = FakeClock(datetime(2025, 11, 30, 23, 30, tzinfo=TZ))
    sched, _ = make(tmp_path, clock)
    assert sched.due_month_end(clock.mono, clock.wall) == "2025-11"
    sched.memory.month_end_done.append("2025-11")
    sched._last_month_end = clock.mono
    # the clock jumps around: back into the window, to other month ends, to the future
    jumps = [datetime(2025, 11, 30, 23, 0, tzinfo=TZ), datetime(2026, 1, 31, 23, 0, tzinfo=TZ),
             datetime(2031, 6, 30, 22, 30, tzinfo=TZ), datetime(2025, 11, 30, 23, 59, tzinfo=TZ)]
    for wall in jumps:
        clock.advance(60)
        clock.wall = wall
        assert sched.due_month_end(clock.mono, wall) is None
    # a month of real (monotonic) time later, the next month end fires again
    clock.mono += 31 * 86400
    assert sched.due_month_end(clock.mono, datetime(2025, 12, 31, 23, 0, tzinfo=TZ)) == "2025-12"


async def test_month_end_is_remembered_across_restarts(tmp_path):
    clock = FakeClock(datetime(2025, 11, 30, 23, 45, tzinfo=TZ))
    sched, jobs = make(tmp_path, clock)
    sched.tick()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert "month-end:2025-11" in jobs.calls
    assert "2025-11" in (tmp_path / MEMORY_FILE).read_text()
    again, jobs2 = make(tmp_path, clock, seed=2)
    again.tick()
    await asyncio.sleep(0)
    assert not [c for c in jobs2.calls if c.startswith("month-end")]


def test_month_end_can_be_switched_off(tmp_path):
    clock = FakeClock(datetime(2025, 11, 30, 23, 30, tzinfo=TZ))
    sched, _ = make(tmp_path, clock, Schedule(version=1, month_end_read=False))
    assert sched.due_month_end(clock.mono, clock.wall) is None


def test_daily_profile_check(tmp_path):
    assert daily_due(datetime(2025, 3, 10, 3, 29, tzinfo=TZ), "03:30", None, 0) is None
    assert daily_due(datetime(2025, 3, 10, 3, 31, tzinfo=TZ), "03:30", None, 0) == "2025-03-10"
    assert daily_due(datetime(2025, 3, 10, 9, 0, tzinfo=TZ), "03:30", "2025-03-10", 0) is None
    clock = FakeClock(datetime(2025, 3, 10, 4, 0, tzinfo=TZ))
    sched, _ = make(tmp_path, clock)
    sched._daily_offset = 0
    assert sched.due_profile_check(clock.mono, clock.wall) == "2025-03-10"
    sched.memory.profile_check_done = "2025-03-10"
    sched._last_profile_check = clock.mono
    # clock set back to yesterday, later than the check time: not again so soon
    clock.advance(600)
    clock.wall = datetime(2025, 3, 9, 5, 0, tzinfo=TZ)
    assert sched.due_profile_check(clock.mono, clock.wall) is None
    # a real day later it is due again
    clock.mono += 86400
    clock.wall = datetime(2025, 3, 11, 4, 0, tzinfo=TZ)
    assert sched.due_profile_check(clock.mono, clock.wall) == "2025-03-11"


def test_wall_clock_jumps_do_not_change_interval_jobs(tmp_path):
    clock = FakeClock(datetime(2025, 3, 10, 12, 0, tzinfo=TZ))
    sched, _ = make(tmp_path, clock, Schedule(version=1, status_poll_s=300, jitter=0.0))
    status = job(sched, "status-poll")
    due_at = status.next_due
    clock.wall = datetime(2031, 1, 1, tzinfo=TZ)  # jumps years ahead
    assert status not in sched.due_interval_jobs(clock.mono)
    clock.wall = datetime(1999, 1, 1, tzinfo=TZ)  # and back
    assert status not in sched.due_interval_jobs(clock.mono)
    assert status.next_due == due_at


async def test_tick_starts_due_jobs_and_skips_overlaps(tmp_path):
    clock = FakeClock(datetime(2025, 3, 10, 12, 0, tzinfo=TZ))
    gate = asyncio.Event()

    class Slow(Recorder):
        async def status_poll(self) -> None:
            self.calls.append("status")
            await gate.wait()

    jobs = Slow()
    store = ScheduleStore(tmp_path, LocalSchedule(), Schedule(version=1, jitter=0.0))
    sched = Scheduler(jobs, store, tmp_path, clock=clock, rng=random.Random(3))
    sched.start()
    sched._daily_offset = 0
    clock.mono = job(sched, "status-poll").next_due
    sched.tick()
    await asyncio.sleep(0.01)
    assert jobs.calls.count("status") == 1
    clock.mono = job(sched, "status-poll").next_due  # due again while still running
    sched.tick()
    await asyncio.sleep(0.01)
    assert jobs.calls.count("status") == 1
    gate.set()
    await asyncio.sleep(0.01)
    clock.mono = job(sched, "status-poll").next_due
    sched.tick()
    await asyncio.sleep(0.01)
    assert jobs.calls.count("status") == 2


async def test_a_failing_job_does_not_stop_the_scheduler(tmp_path):
    clock = FakeClock(datetime(2025, 3, 10, 12, 0, tzinfo=TZ))
    errors: list[str] = []

    class Broken(Recorder):
        async def rediscover(self) -> None:
            self.calls.append("rediscover")
            raise RuntimeError("boom")

    jobs = Broken()
    store = ScheduleStore(tmp_path, LocalSchedule(), Schedule(version=1))
    sched = Scheduler(jobs, store, tmp_path, clock=clock,
                      on_error=lambda name, exc: errors.append(f"{name}: {exc}"))
    sched.start()
    for _ in range(2):
        clock.mono = job(sched, "rediscovery").next_due
        sched.tick()
        await asyncio.sleep(0.01)
    assert jobs.calls.count("rediscover") == 2
    assert errors == ["rediscovery: boom", "rediscovery: boom"]
    assert MONTH_END_WINDOW_S == 4 * 3600

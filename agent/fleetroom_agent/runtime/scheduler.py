"""When the agent works: server-steered intervals with jitter, on a clock that may lie.

Two kinds of time, deliberately kept apart:

* **Intervals** (status poll, meter read, rediscovery) run on
  :func:`time.monotonic`.  A customer PC whose wall clock jumps an hour, a day or
  a year — NTP finally syncing, a dead CMOS battery, a VM resumed from a snapshot
  — neither floods devices with polls nor stops polling.
* **Calendar** events (the month-end read for billing, the daily profile check at
  a local time) need the wall clock.  Each is remembered by its calendar key
  (``2025-11`` / ``2025-11-30``) in ``scheduler.json`` *and* guarded by a minimum
  monotonic gap, so a clock jumping back and forth across a month end triggers
  one read, not one per jump.

Jitter (``Schedule.jitter`` × interval, uniform) spreads a thousand agents with the
same schedule over the interval instead of having them poll in the same second.
The schedule itself comes from the server (persisted in ``schedule.json`` when a
new version arrives, always re-validated against the protocol's limits) with two
local adjustments from ``agent.toml``: a ceiling on the status interval and the
profile-check time.  Command polls are the sender's (``command_poll_s`` and the
server's ``poll_after_s``), because they ride on the same connection logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

from fleetroom_protocol.messages import Schedule
from pydantic import ValidationError

from .config import LocalSchedule
from .jsonfile import read_json, write_json

log = logging.getLogger(__name__)

SCHEDULE_FILE: Final = "schedule.json"
MEMORY_FILE: Final = "scheduler.json"
MONTH_END_WINDOW_S: Final = 4 * 3600
"""The month-end read happens in the last four hours of the month (local time)."""
MONTH_END_MIN_GAP_S: Final = 20 * 86400
"""Monotonic seconds between two month-end reads of one process: a wall clock
jumping across several month ends cannot trigger a read per jump."""
DAILY_MIN_GAP_S: Final = 6 * 3600
"""Monotonic seconds between two daily profile checks (a clock set back a day
must not check again at once)."""
CALENDAR_TICK_S: Final = 30.0
"""How often calendar jobs are looked at (they have no monotonic due time)."""
STARTUP_DELAY_S: Final = (1.0, 5.0)
"""The first rediscovery (the startup scan): soon after start, not at the same instant
for every agent restarted by the same update."""


class Clock(Protocol):
    """Time as the scheduler sees it; tests pass one whose wall clock is wrong."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""
        ...

    def now(self) -> datetime:
        """The local wall clock, timezone-aware (may be wrong or jump)."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def now(self) -> datetime:
        """Local time with its UTC offset."""
        return datetime.now().astimezone()


def jittered(interval: float, jitter: float, rng: random.Random) -> float:
    """``interval`` ± ``jitter`` × ``interval``, uniformly (jitter is at most 0.5)."""
    return interval * (1.0 + rng.uniform(-jitter, jitter))


@dataclass(frozen=True)
class Effective:
    """The schedule in force: the server's, adjusted by local policy."""

    server: Schedule
    status_poll_s: float
    profile_check: str

    @classmethod
    def of(cls, server: Schedule, local: LocalSchedule) -> Effective:
        """Apply the local ceiling and the local profile-check time."""
        status = float(server.status_poll_s)
        if local.max_status_poll_s is not None:
            status = min(status, float(local.max_status_poll_s))
        return cls(server, status, local.profile_check or server.profile_check)


class ScheduleStore:
    """The server's schedule, persisted; a new one is taken only if its version is newer."""

    def __init__(self, data_dir: Path, local: LocalSchedule,
                 initial: Schedule | None = None) -> None:
        self.path = data_dir / SCHEDULE_FILE
        self.local = local
        self._listeners: list[Callable[[], None]] = []
        stored = self._load()
        self.schedule = stored or initial or Schedule()

    def _load(self) -> Schedule | None:
        raw = read_json(self.path)
        if raw is None:
            return None
        try:
            return Schedule.model_validate(raw)
        except ValidationError as exc:
            log.error("ignoring %s: not a valid schedule (%d problems)", self.path,
                      exc.error_count())
            return None

    @property
    def effective(self) -> Effective:
        """What the jobs use now."""
        return Effective.of(self.schedule, self.local)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a new schedule is applied."""
        self._listeners.append(callback)

    def apply(self, new: Schedule) -> bool:
        """Take ``new`` if it is newer than the current one; persist it first.

        The model already enforces the protocol's limits, so a server (or a
        forged value that somehow got this far) cannot ask for a 1-second poll.
        """
        if new.version <= self.schedule.version:
            return False
        write_json(self.path, new.model_dump(mode="json"))
        old, self.schedule = self.schedule, new
        log.info("schedule version %d -> %d (status %ss, meter %ss)", old.version,
                 new.version, new.status_poll_s, new.meter_read_s)
        for cb in self._listeners:
            cb()
        return True


@dataclass
class CalendarMemory:
    """What calendar jobs already did, by calendar key (persisted)."""

    month_end_done: list[str] = field(default_factory=list)
    profile_check_done: str | None = None

    @classmethod
    def load(cls, path: Path) -> CalendarMemory:
        """From ``scheduler.json``; anything unusable counts as "nothing done yet"."""
        raw = read_json(path)
        if not isinstance(raw, dict):
            return cls()
        months = raw.get("month_end_done")
        check = raw.get("profile_check_done")
        return cls([m for m in months if isinstance(m, str)] if isinstance(months, list) else [],
                   check if isinstance(check, str) else None)

    def save(self, path: Path) -> None:
        """Persist (keeps the last 24 month keys)."""
        write_json(path, {"month_end_done": self.month_end_done[-24:],
                          "profile_check_done": self.profile_check_done})


def month_end_key(wall: datetime, window_s: float = MONTH_END_WINDOW_S) -> str | None:
    """``YYYY-MM`` when ``wall`` lies in the last ``window_s`` seconds of its month."""
    first_next = (wall.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    left = (first_next - wall).total_seconds()
    return f"{wall.year:04d}-{wall.month:02d}" if 0 < left <= window_s else None


def daily_due(wall: datetime, at: str, done: str | None, offset_s: float) -> str | None:
    """Today's key (``YYYY-MM-DD``) when the daily job at ``at`` (+ offset) is due."""
    hour, minute = (int(x) for x in at.split(":"))
    today: date = wall.date()
    start = wall.replace(hour=hour, minute=minute, second=0, microsecond=0) + timedelta(
        seconds=offset_s)
    key = today.isoformat()
    return key if wall >= start and done != key else None


JobFn = Callable[[], Awaitable[None]]


@dataclass
class IntervalJob:
    """A job every ``interval()`` seconds of monotonic time, jittered."""

    name: str
    run: JobFn
    interval: Callable[[], float]
    next_due: float = 0.0
    last_start: float | None = None
    task: asyncio.Task[None] | None = None
    runs: int = 0


class Jobs(Protocol):
    """What the scheduler starts (implemented by the runtime)."""

    async def status_poll(self) -> None:
        """Cheap status check of every known device."""
        ...

    async def meter_read(self) -> None:
        """Full read of every known device (scheduled)."""
        ...

    async def month_end_read(self, month: str) -> None:
        """Full read of every known device for the month's billing cut-off."""
        ...

    async def rediscover(self) -> None:
        """Scan the configured targets for new or moved devices."""
        ...

    async def profile_check(self) -> None:
        """Look for a newer signed profile bundle."""
        ...


class Scheduler:
    """Starts jobs when due; never two runs of one job at once; never stops on an error."""

    def __init__(self, jobs: Jobs, store: ScheduleStore, data_dir: Path, *,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.jobs = jobs
        self.store = store
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.memory_path = data_dir / MEMORY_FILE
        self.memory = CalendarMemory.load(self.memory_path)
        self.on_error = on_error
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_month_end: float | None = None
        self._last_profile_check: float | None = None
        # Spread agents over the first quarter of the window; the rest is slack for
        # reads that take long or an agent that starts late.
        self._month_offset = self.rng.uniform(0, 0.25) * MONTH_END_WINDOW_S
        self._daily_offset = self.rng.uniform(0, 1) * 1800.0
        # Intervals are read at call time: the schedule changes while we run.
        self.interval_jobs = [
            IntervalJob("status-poll", jobs.status_poll,
                        lambda: float(store.effective.status_poll_s)),
            IntervalJob("meter-read", jobs.meter_read,
                        lambda: float(store.schedule.meter_read_s)),
            IntervalJob("rediscovery", jobs.rediscover,
                        lambda: float(store.schedule.rediscovery_s)),
        ]
        self._profile_check_task: asyncio.Task[None] | None = None
        store.on_change(self.reschedule)
        self._started = False

    # ------------------------------------------------------------------ planning

    def _delay(self, job: IntervalJob) -> float:
        return jittered(job.interval(), self.store.effective.server.jitter, self.rng)

    def start(self) -> None:
        """Set first due times: rediscovery soon (it is the startup scan), the rest one
        interval on."""
        now = self.clock.monotonic()
        for job in self.interval_jobs:
            if job.name == "rediscovery":
                job.next_due = now + self.rng.uniform(*STARTUP_DELAY_S)
            else:
                job.next_due = now + self._delay(job)
        self._started = True

    def reschedule(self) -> None:
        """A new schedule: every interval job's next run follows the new interval,
        counted from its last run (so a shorter interval takes effect at once)."""
        if not self._started:
            return
        now = self.clock.monotonic()
        for job in self.interval_jobs:
            if job.name == "rediscovery" and job.last_start is None:
                continue  # the startup scan is still pending; keep it early
            ref = job.last_start if job.last_start is not None else now
            job.next_due = max(now, ref + self._delay(job))
        self._changed.set()

    def due_interval_jobs(self, now: float) -> list[IntervalJob]:
        """Jobs whose time has come (and set their next due time)."""
        due = []
        for job in self.interval_jobs:
            if now < job.next_due:
                continue
            job.next_due = now + self._delay(job)
            if job.task is not None and not job.task.done():
                log.info("%s still running; skipping this run", job.name)
                continue
            job.last_start = now
            due.append(job)
        return due

    def due_month_end(self, now: float, wall: datetime) -> str | None:
        """The month key when a month-end read should start now."""
        if not self.store.schedule.month_end_read:
            return None
        key = month_end_key(wall, MONTH_END_WINDOW_S - self._month_offset)
        if key is None or key in self.memory.month_end_done:
            return None
        if self._last_month_end is not None and now - self._last_month_end < MONTH_END_MIN_GAP_S:
            return None
        return key

    def due_profile_check(self, now: float, wall: datetime) -> str | None:
        """Today's key when the daily profile check should start now."""
        key = daily_due(wall, self.store.effective.profile_check,
                        self.memory.profile_check_done, self._daily_offset)
        if key is None:
            return None
        if (self._last_profile_check is not None
                and now - self._last_profile_check < DAILY_MIN_GAP_S):
            return None
        return key

    # ------------------------------------------------------------------ running

    def _spawn(self, name: str, fn: JobFn) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s failed", name)
                if self.on_error is not None:
                    self.on_error(name, exc)

        task = asyncio.get_running_loop().create_task(guarded(), name=f"job:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def tick(self) -> float:
        """Start what is due; return the seconds until something may be due next."""
        now = self.clock.monotonic()
        wall = self.clock.now()
        for job in self.due_interval_jobs(now):
            job.runs += 1
            job.task = self._spawn(job.name, job.run)
        month = self.due_month_end(now, wall)
        if month is not None:
            self._last_month_end = now
            self.memory.month_end_done.append(month)
            self._save_memory()
            self._spawn("month-end-read", lambda: self.jobs.month_end_read(month))
        check = self.due_profile_check(now, wall)
        if check is not None:
            running = self._profile_check_task
            if running is None or running.done():
                self._last_profile_check = now
                self.memory.profile_check_done = check
                self._save_memory()
                self._profile_check_task = self._spawn("profile-check", self.jobs.profile_check)
        soonest = min(j.next_due for j in self.interval_jobs) - now
        return max(0.05, min(soonest, CALENDAR_TICK_S))

    def _save_memory(self) -> None:
        try:
            self.memory.save(self.memory_path)
        except OSError as exc:
            log.error("cannot save %s: %s", self.memory_path, exc)

    async def run(self) -> None:
        """Forever: start due jobs, sleep until the next one (or a schedule change)."""
        if not self._started:
            self.start()
        try:
            while True:
                wait = self.tick()
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def describe(self) -> dict[str, object]:
        """Next due times (seconds from now) and run counts, for the state file."""
        now = self.clock.monotonic()
        return {j.name: {"next_in_s": round(max(0.0, j.next_due - now), 1), "runs": j.runs,
                         "running": j.task is not None and not j.task.done()}
                for j in self.interval_jobs}

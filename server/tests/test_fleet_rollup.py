"""Retention tiers: daily counter rollups (wraps included) and bounded pruning."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.utils import timezone
from fleetroom.fleet.models import CounterDaily, CounterValue, Device, Reading, SupplyLevel
from fleetroom.fleet.services import do_rollup_and_prune, ingest_readings
from fleetroom.fleet.tasks import rollup_and_prune
from fleetroom_protocol import Counter

from server.tests.test_fleet_support import agent_reading, at, make_tree

pytestmark = pytest.mark.django_db
HOURS = (1, 7, 13, 19)
DAYS = 10


def series(start_value: int):
    """Four readings a day for ten days, counting up by 7 per reading from start_value,
    modulo 2**32 (so a start near the top wraps during the series)."""
    now = timezone.now()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    template = agent_reading("counter-wrap-before")
    out = []
    value = start_value
    for day in range(DAYS, 0, -1):
        for hour in HOURS:
            r = at(template, midnight - timedelta(days=day) + timedelta(hours=hour))
            r.counters = [Counter(name="total", value=value, unit="impressions",
                                  source="test", width=32)]
            out.append(r)
            value = (value + 7) % 2**32
    return now, out


def expected_daily(readings):
    """Per UTC day: first, last, usage (sum of per-reading usage), samples without usage,
    computed here from the inputs, independently of the service."""
    days: dict = {}
    prev = None
    for r in readings:
        v = r.counters[0].value
        usage = None if prev is None else (v - prev) % 2**32
        d = days.setdefault(r.taken_at.date(), {"first": v, "usage": 0, "none": 0, "n": 0})
        d["last"] = v
        d["n"] += 1
        if usage is None:
            d["none"] += 1
        else:
            d["usage"] += usage
        prev = v
    return days


def daily_rows():
    return {d.day: {"first": d.first_value, "last": d.last_value, "usage": d.usage,
                    "none": d.samples_without_delta, "n": d.samples}
            for d in CounterDaily.objects.order_by("day")}


def test_rollup_then_prune_keeps_rollups_and_the_last_reading():
    tree = make_tree()
    now, readings = series(2**32 - 100)  # wraps on the fourth day
    summary = ingest_readings(readings, tenant=tree["s1"])
    assert summary.stored == len(readings)
    assert summary.events["counter_wrapped"] == 1
    report = do_rollup_and_prune(now=now, retention_days=5)
    assert report.finished
    assert len(report.days_rolled) == DAYS
    assert daily_rows() == expected_daily(readings)

    cutoff = now - timedelta(days=5)
    device = Device.objects.get()
    assert report.readings_pruned == sum(1 for r in readings if r.taken_at < cutoff)
    assert not Reading.objects.filter(taken_at__lt=cutoff).exclude(
        pk=device.last_reading_id).exists()
    assert CounterValue.objects.count() == Reading.objects.count()
    kept = Reading.objects.values_list("id", flat=True)
    assert not SupplyLevel.objects.exclude(reading_id__in=kept).exists()

    # Running again changes nothing (the recent days are recomputed to the same values).
    again = do_rollup_and_prune(now=now, retention_days=5)
    assert again.readings_pruned == 0
    assert daily_rows() == expected_daily(readings)


def test_a_silent_devices_last_reading_survives_pruning():
    tree = make_tree()
    now, readings = series(1000)
    ingest_readings(readings[:2], tenant=tree["s1"])  # ten days ago, then silent
    do_rollup_and_prune(now=now, retention_days=1)
    device = Device.objects.get()
    assert list(Reading.objects.values_list("id", flat=True)) == [device.last_reading_id]
    assert CounterValue.objects.filter(reading_id=device.last_reading_id).exists()


def test_late_reading_is_absorbed_by_the_lookback():
    tree = make_tree()
    now, readings = series(5000)
    ingest_readings(readings[:-1], tenant=tree["s1"])
    do_rollup_and_prune(now=now, retention_days=30)
    yesterday = readings[-1].taken_at.date()
    before = CounterDaily.objects.get(day=yesterday)
    ingest_readings(readings[-1:], tenant=tree["s1"])  # arrives after the rollup
    do_rollup_and_prune(now=now, retention_days=30)
    after = CounterDaily.objects.get(day=yesterday)
    assert after.samples == before.samples + 1
    assert after.last_value == readings[-1].counters[0].value
    assert daily_rows() == expected_daily(readings)


def test_work_is_bounded_and_resumes():
    tree = make_tree()
    now, readings = series(10)
    ingest_readings(readings, tenant=tree["s1"])
    runs = 0
    while True:
        runs += 1
        report = do_rollup_and_prune(now=now, retention_days=3, max_batches=3, prune_batch=5)
        assert report.batches <= 3
        if report.finished:
            break
        assert runs < 50
    assert runs > 1
    assert daily_rows() == expected_daily(readings)
    assert not Reading.objects.filter(taken_at__lt=now - timedelta(days=3)).exclude(
        pk=Device.objects.get().last_reading_id).exists()


def test_periodic_task_runs_the_service():
    tree = make_tree()
    _, readings = series(10)
    ingest_readings(readings, tenant=tree["s1"])
    result = rollup_and_prune.call_local()
    assert result["finished"] is True
    assert len(result["days"]) == DAYS
    assert CounterDaily.objects.count() == DAYS

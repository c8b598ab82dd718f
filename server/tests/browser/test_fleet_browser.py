"""Browser flows of the fleet pages: the dashboard and a device's counter chart."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from fleetroom.accounts.testing import PASSWORD
from fleetroom.fleet.services import do_rollup_and_prune, ingest_reading

from server.tests.test_fleet_views import BY_SERIAL, NOW, SPECS, build_world, reading

from .conftest import screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _login(page, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_load_state("networkidle")


def test_dashboard_shows_the_fleet_by_state(page):
    _, _, users = build_world()
    _login(page, users["acme_admin"].username)
    page.goto("/fleet/")
    # Acme's devices by the state the ingested readings give (computed from the specs).
    acme = [s for s in SPECS if s.tenant in {"berlin", "hamburg", "acme"}]
    for state in ("ok", "warning", "error", "not_reporting"):
        want = sum(1 for s in acme if s.expected_state() == state)
        card = page.locator(f"li.state-card.{state} .value")
        assert card.count() == 1, state
        assert card.inner_text().strip() == str(want), state
    screenshot(page, "fleet-dashboard")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(page, "fleet-dashboard-phone")
    assert page.console_errors == []


def test_device_detail_chart_draws_every_value(page):
    t, devices, users = build_world()
    spec = BY_SERIAL["KY0001"]
    midnight = NOW.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    history = [(midnight - timedelta(days=day) + timedelta(hours=12), 20_000 + 150 * (10 - day))
               for day in range(10, 0, -1)]  # one reading at noon on each of the last ten days
    for when, value in history:
        ingest_reading(reading(spec, when, total=value), tenant=t["berlin"])
    do_rollup_and_prune(now=NOW)
    # Expected from the data put in: each past UTC day's last value (the daily tier),
    # then today's raw values; the fixture's own reading is one of them.
    per_day: dict = {}
    raw = []
    for when, value in sorted([*history, (NOW - timedelta(days=spec.days_ago), spec.total)]):
        if when < midnight:
            per_day[when.astimezone(UTC).date()] = value
        else:
            raw.append(value)
    expected = [per_day[d] for d in sorted(per_day)] + raw
    _login(page, users["acme_admin"].username)
    page.goto(f"/fleet/devices/{devices['KY0001'].pk}/?counter=total&period=30")
    chart = page.locator("svg.chart")
    chart.wait_for()
    drawn = [int(v) for v in page.locator("svg.chart circle.pt").evaluate_all(
        "els => els.map(e => e.dataset.value)")]
    assert drawn == expected
    box = chart.bounding_box()
    assert box is not None
    assert box["width"] > 200
    # The period selector swaps the chart in place (htmx) without a page load.
    page.select_option("#c-period", "7")
    page.wait_for_load_state("networkidle")
    week = page.locator("svg.chart circle.pt").count()
    assert 0 < week < len(drawn)
    screenshot(page, "fleet-device-chart")
    assert page.console_errors == []

"""Real headless Chromium (Debian's ``chromium``) driven by Playwright.

Why Debian's browser and not Playwright's download: CI machines reach only the
package registries, and the distribution's build gets security updates.  The
browser runs against pytest-django's live server (a real HTTP server on
127.0.0.1 over the test database).  Screenshots are written to
``test-artifacts/screenshots/`` (or ``$FLEETROOM_TEST_ARTIFACTS``) so a failing
UI run can be looked at.  In CI (``CI=true``) a missing browser is an error, not
a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("FLEETROOM_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[3] / "test-artifacts"))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """All browser tests on one xdist worker, one after another (see ``browser``)."""
    for item in items:
        if "browser" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module.

    Module scope, not session: Playwright's sync API keeps an asyncio loop running on
    this thread while it is open, and every later ``asyncio.run`` in the same worker
    (the agent's tests) would fail — so it is closed when the module is done.
    """
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is not installed, and CI must run the browser tests")
        pytest.skip("chromium not installed (apt-get install chromium); browser tests skipped")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM
    # calls (fixtures) are synchronous and safe, so Django's guard is lifted here only.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=exe, headless=True,
                                   args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                yield b
            finally:
                b.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server, request):
    """A fresh browser context per test (own cookies), desktop size, English."""
    context = browser.new_context(base_url=live_server.url, locale="en-GB",
                                  viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    # CSP violations and script errors show up here; a clean page has none.
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    yield pg
    context.close()


def screenshot(page, name: str) -> Path:
    """Keep a full-page screenshot as a test artefact; returns its path."""
    ARTIFACTS.joinpath("screenshots").mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "screenshots" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

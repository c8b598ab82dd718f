"""The agents pages in headless Chromium: an administrator creates an enrollment token
in the UI, the test reads it (and the command) off the page, a real agent enrolls with
it — ``fleetroom_agent.enroll`` making its own key pair and calling the real enroll
endpoint of the live server over HTTP — and the new agent appears in the list.  Then
every agents page at phone width: nothing wider than the screen, no console errors
(CSP), htmx filtering, screenshots kept."""

from __future__ import annotations

import asyncio
import shlex
import stat
import threading
from pathlib import Path

import pytest
from fleetroom.accounts.testing import PASSWORD, stored_totp_secret, totp_code
from fleetroom.agents.models import Agent, EnrollmentToken
from fleetroom_agent.enroll import enroll
from fleetroom_agent.identity import AgentIdentity
from playwright.sync_api import expect

from server.tests.test_agents_ui_support import build_world

from .conftest import screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PHONE = {"width": 390, "height": 844}


def sign_in_with_totp(page, user) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_selector("input[name=code]")
    page.fill("input[name=code]", totp_code(stored_totp_secret(user)))
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_load_state("networkidle")
    assert page.locator(".accountnav summary").inner_text().strip() == user.username


def run_enroll(server: str, token: str, data_dir: Path) -> AgentIdentity:
    """The agent's own enrollment, on a thread of its own (Playwright's sync API keeps
    an event loop on this one)."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["identity"] = asyncio.run(enroll(server, token, data_dir, timeout_s=30))
        except Exception as exc:
            result["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(60)
    if "error" in result:
        raise AssertionError(f"enrollment failed: {result['error']}")
    identity = result["identity"]
    assert isinstance(identity, AgentIdentity)
    return identity


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_token_from_the_page_enrolls_a_real_agent(page, live_server, settings, tmp_path):
    settings.FLEETROOM_AGENTS_URL = live_server.url  # what the command on the page names
    w = build_world()
    tech = w.user("tech")
    sign_in_with_totp(page, tech)
    page.goto("/agents/")
    page.click("text=Enroll an agent")
    page.select_option("#id_tenant", str(w.t["berlin"].pk))
    page.fill("#id_label", "Berlin print room")
    page.fill("#id_max_uses", "1")
    page.click("main form button[type=submit]")
    page.wait_for_load_state("networkidle")
    token = page.locator("#enroll-token").inner_text().strip()
    command = shlex.split(page.locator("#enroll-command").inner_text().strip())
    screenshot(page, "agents-token-created")
    assert command[:2] == ["fleetroom-agent", "enroll"]
    server = command[command.index("--server") + 1]
    assert server == live_server.url
    assert command[command.index("--token") + 1] == token
    stored = EnrollmentToken.objects.get(label="Berlin print room")
    assert stored.prefix == token[:12]
    assert token not in stored.token_hash

    identity = run_enroll(server, token, tmp_path / "agent")
    assert stat.S_IMODE(AgentIdentity.path_in(tmp_path / "agent").stat().st_mode) == 0o600
    agent = Agent.objects.get(public_id=identity.agent_id)
    assert agent.tenant == w.t["berlin"]
    assert agent.enrolled_via == stored

    page.goto("/agents/")
    link = page.locator(f'a[href="/agents/{identity.agent_id}/"]')
    expect(link).to_have_count(1)
    row = page.locator("table.agents tbody tr", has=link)
    assert "Acme › Berlin" in row.inner_text()
    assert "never" in row.inner_text()  # enrolled, not yet reported
    # The token is used up now, and says so.
    page.goto("/agents/tokens/")
    token_row = page.locator("table.tokens tbody tr", has_text=token[:12])
    assert "Used up" in token_row.inner_text()
    assert "1 / 1" in token_row.inner_text()
    # The agent's page opens, with the actions an agent manager has.
    link_target = f"/agents/{identity.agent_id}/"
    page.goto(link_target)
    assert page.locator("main h1").inner_text().strip() == agent.name
    assert page.locator("#schedule form").count() == 1
    assert page.console_errors == []


def test_agents_pages_on_a_phone(browser, live_server):
    w = build_world()
    context = browser.new_context(base_url=live_server.url, locale="en-GB", viewport=PHONE)
    phone = context.new_page()
    errors: list[str] = []
    phone.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    phone.on("pageerror", lambda e: errors.append(str(e)))
    try:
        sign_in_with_totp(phone, w.user("tech"))
        berlin = w.agent("child").public_id
        pages = {"list": "/agents/", "detail": f"/agents/{berlin}/",
                 "tokens": "/agents/tokens/", "token-new": "/agents/tokens/new/",
                 "security": "/agents/security/", "schedule": f"/agents/{berlin}/schedule/",
                 "reenroll": f"/agents/{berlin}/reenroll/"}
        for name, path in pages.items():
            phone.goto(path)
            phone.wait_for_load_state("networkidle")
            assert phone.locator("main h1").count() == 1, name
            assert fits_the_screen(phone), name
            screenshot(phone, f"agents-phone-{name}")
        # A one-time token at phone width wraps instead of widening the page.
        phone.goto("/agents/tokens/new/")
        phone.select_option("#id_tenant", str(w.t["munich"].pk))
        phone.click("main form button[type=submit]")
        phone.wait_for_load_state("networkidle")
        assert phone.locator("#enroll-token").inner_text().startswith("fre1_")
        assert fits_the_screen(phone)
        screenshot(phone, "agents-phone-token-created")
        # htmx: typing in the search swaps only the table and keeps the address in step.
        phone.goto("/agents/")
        expect(phone.locator("table.agents tbody tr")).to_have_count(3)
        phone.fill("#f-q", "munich")
        expect(phone.locator("table.agents tbody tr")).to_have_count(1)
        assert "q=munich" in phone.url
        assert "munich-pc" in phone.locator("table.agents").inner_text()
        assert errors == []
    finally:
        context.close()

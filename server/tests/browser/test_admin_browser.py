"""Administration pages in headless Chromium at phone width: htmx under the strict CSP,
no page wider than the screen, and the one-time code on screen (screenshots kept)."""

from __future__ import annotations

import pytest
from fleetroom.accounts.testing import PASSWORD
from fleetroom.tenancy.models import AccessCode
from playwright.sync_api import expect

from server.tests.test_admin_support import build_world, url

from .conftest import screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser, live_server):
    context = browser.new_context(base_url=live_server.url, locale="en-GB", viewport=PHONE)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    yield pg
    context.close()


def sign_in(page, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_load_state("networkidle")


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_admin_pages_on_a_phone(phone):
    w = build_world()
    sign_in(phone, "a-admin")
    for name, args in (("site_list", ()), ("tenant_detail", (w.ca.pk,)), ("user_list", ()),
                       ("user_detail", (w.a_viewer.pk,)), ("user_create", ()),
                       ("role_list", ()), ("access_code_list", ()),
                       ("access_code_create", ()), ("access_code_redeem", ()), ("profile", ())):
        phone.goto(url(name, *args))
        phone.wait_for_load_state("networkidle")
        assert phone.locator("main h1").count() == 1, name
        if not fits_the_screen(phone):
            wide = phone.evaluate("""Array.from(document.querySelectorAll('body *')).filter(
                e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 8).map(
                e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(
                e.getBoundingClientRect().right))""")
            raise AssertionError(f"{name}: {wide}")
        screenshot(phone, f"admin-phone-{name.replace('_', '-')}")
    assert phone.console_errors == []


def test_htmx_search_and_sites_following_the_tenant(phone):
    w = build_world()
    sign_in(phone, "a-admin")
    phone.goto(url("user_list"))
    assert phone.locator("#user-rows tbody tr").count() == 3
    phone.fill("#user-q", "viktor")
    expect(phone.locator("#user-rows tbody tr")).to_have_count(1)
    assert "a-viewer" in phone.locator("#user-rows").inner_text()
    assert "q=viktor" in phone.url  # the search is in the address (back button, sharing)
    # Picking a tenant narrows the site checkboxes to that tenant (htmx swaps the field).
    phone.goto(url("user_create"))
    assert phone.locator("#field-sites input[type=checkbox]").count() == 3
    phone.select_option("#id_tenant", str(w.a_south.pk))
    expect(phone.locator("#field-sites input[type=checkbox]")).to_have_count(0)
    phone.select_option("#id_tenant", str(w.a_north.pk))
    expect(phone.locator("#field-sites input[type=checkbox]")).to_have_count(1)
    assert "Room 1" in phone.locator("#field-sites").inner_text()
    assert phone.console_errors == []


def test_access_code_shown_once_in_the_browser(phone):
    w = build_world()
    sign_in(phone, "a-admin")
    phone.goto(url("access_code_create"))
    phone.select_option("#id_tenant", str(w.ca.pk))
    phone.wait_for_load_state("networkidle")
    phone.check("input[name=permissions][value=view_fleet]")
    phone.fill("#id_label", "Phone test")
    phone.click("main form button[type=submit]")
    phone.wait_for_selector("#access-code")
    text = phone.locator("#access-code").inner_text().strip()
    assert AccessCode.objects.filter(label="Phone test").count() == 1
    assert fits_the_screen(phone)
    screenshot(phone, "admin-phone-access-code-created")
    phone.goto(url("access_code_list"))
    assert text not in phone.content()
    assert phone.console_errors == []

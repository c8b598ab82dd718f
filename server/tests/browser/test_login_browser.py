"""Browser flows: login with a second factor, and the language switch."""

from __future__ import annotations

import pytest
from django.utils import translation
from django.utils.translation import gettext
from fleetroom.accounts.testing import PASSWORD, enable_totp, make_user, totp_code
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.models import TenantKind
from fleetroom.tenancy.permissions import BuiltinRole
from fleetroom.tenancy.services import do_create_tenant, do_grant_membership

from .conftest import screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def dealer_admin():
    operator = do_create_tenant(None, TenantKind.OPERATOR, "Platform", SYSTEM)
    dealer = do_create_tenant(operator, TenantKind.DEALER, "Dealer One", SYSTEM)
    user = make_user("dana")
    do_grant_membership(user, dealer, acting_user=SYSTEM, role=BuiltinRole.DEALER_ADMIN)
    return user


def test_login_with_password_and_totp(page, dealer_admin):
    secret = enable_totp(dealer_admin)
    page.goto("/accounts/login/")
    page.fill("input[name=login]", "dana")
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_selector("input[name=code]")
    screenshot(page, "login-totp-step")
    page.fill("input[name=code]", totp_code(secret))
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_load_state("networkidle")
    # Logged in: the account menu shows the user, and the login form is gone.
    assert page.locator(".accountnav summary").inner_text().strip() == "dana"
    assert page.locator("input[name=password]").count() == 0
    screenshot(page, "after-login")
    assert page.console_errors == []


def test_wrong_totp_code_keeps_the_user_out(page, dealer_admin):
    secret = enable_totp(dealer_admin)
    page.goto("/accounts/login/")
    page.fill("input[name=login]", "dana")
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_selector("input[name=code]")
    good = totp_code(secret)
    page.fill("input[name=code]", f"{(int(good) + 1) % 1_000_000:06d}")
    page.click("main form button[type=submit] >> nth=0")
    page.wait_for_load_state("networkidle")
    assert page.locator("input[name=code]").count() == 1
    assert page.locator(".accountnav").count() == 0


def test_language_switch_to_german_and_back(page):
    page.goto("/accounts/login/")
    assert page.locator("html").get_attribute("lang") == "en"
    page.select_option("#lang-select", "de")
    page.click(".langswitch button")
    page.wait_for_load_state("networkidle")
    assert page.locator("html").get_attribute("lang") == "de"
    assert page.url.endswith("/de/accounts/login/")
    # The heading in German, as our catalogue translates it.
    with translation.override("de"):
        german = gettext("Sign In")
    assert german != "Sign In"
    assert page.locator("h1").inner_text().strip() == german
    screenshot(page, "login-de")
    page.select_option("#lang-select", "en")
    page.click(".langswitch button")
    page.wait_for_load_state("networkidle")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text().strip() == "Sign In"
    assert not page.url.rstrip("/").endswith("/de/accounts/login")
    assert page.console_errors == []

"""Second factor: TOTP with recovery codes, passkeys enabled, secrets encrypted at rest,
MFA forced where policy requires it, and API-token issuance held to the same rules."""

from __future__ import annotations

import logging

import pytest
from allauth.mfa.models import Authenticator
from django.contrib.auth import SESSION_KEY
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.test import Client, RequestFactory
from django.urls import reverse
from fleetroom.accounts import audit_events, policy, secretbox, services
from fleetroom.accounts.adapters import MFAAdapter
from fleetroom.accounts.services import ApiAuthenticationFailed
from fleetroom.accounts.testing import (
    PASSWORD,
    assert_no_inline_code,
    enable_totp,
    make_user,
    post_code,
    post_login,
    stored_totp_secret,
    totp_code,
    unused_recovery_codes,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def logged_in(client) -> bool:
    return SESSION_KEY in client.session


def test_totp_login():
    alice = make_user("alice")
    enable_totp(alice)
    client = Client()
    response = post_login(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    assert not logged_in(client)  # the password alone is not enough
    page = client.get(reverse("mfa_authenticate"))
    assert page.status_code == 200
    assert "mfa/js/webauthn.js" in page.text  # security keys offered as the alternative
    response = post_code(client, totp_code(stored_totp_secret(alice)))
    assert response.status_code == 302
    assert logged_in(client)


def test_totp_code_cannot_be_replayed():
    alice = make_user("alice")
    enable_totp(alice)
    code = totp_code(stored_totp_secret(alice))
    first = Client()
    post_login(first, "alice", PASSWORD)
    post_code(first, code)
    assert logged_in(first)
    second = Client()
    post_login(second, "alice", PASSWORD)
    post_code(second, code)
    assert not logged_in(second)


def test_recovery_code_works_once():
    alice = make_user("alice")
    enable_totp(alice)
    code = unused_recovery_codes(alice)[0]
    client = Client()
    post_login(client, "alice", PASSWORD)
    post_code(client, code)
    assert logged_in(client)
    assert code not in unused_recovery_codes(alice)
    again = Client()
    post_login(again, "alice", PASSWORD)
    response = post_code(again, code)
    assert not logged_in(again)
    assert "Incorrect code." in response.text


def test_mfa_secrets_are_encrypted_at_rest():
    alice = make_user("alice")
    secret = enable_totp(alice)
    totp = Authenticator.objects.get(user=alice, type=Authenticator.Type.TOTP)
    codes = Authenticator.objects.get(user=alice, type=Authenticator.Type.RECOVERY_CODES)
    assert totp.data["secret"].startswith(secretbox.PREFIX)
    assert secret not in totp.data["secret"]
    assert codes.data["seed"].startswith(secretbox.PREFIX)
    assert stored_totp_secret(alice) == secret


def test_a_secret_written_around_the_adapter_is_refused():
    with pytest.raises(secretbox.SecretBoxError):
        secretbox.decrypt("JBSWY3DPEHPK3PXP")


def test_key_rotation_keeps_secrets_readable(settings):
    token = secretbox.encrypt("JBSWY3DPEHPK3PXP")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "n" * 60
    assert secretbox.decrypt(token) == "JBSWY3DPEHPK3PXP"


def test_mfa_pages_work_under_the_content_security_policy():
    alice = make_user("alice")
    enable_totp(alice)
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert_no_inline_code(client.get(reverse("mfa_authenticate")).text)
    post_code(client, totp_code(stored_totp_secret(alice)))
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    for name in ("mfa_index", "mfa_add_webauthn", "mfa_generate_recovery_codes",
                 "usersessions_list", "account_change_password"):
        page = client.get(reverse(name))
        assert page.status_code == 200, name
        assert_no_inline_code(page.text)
    assert "mfa/js/webauthn.js" in client.get(reverse("mfa_add_webauthn")).text


def test_webauthn_and_passkeys_are_enabled():
    assert reverse("mfa_add_webauthn")
    assert reverse("mfa_login_webauthn")
    assert finders.find("mfa/js/webauthn.js")
    assert finders.find("mfa/js/webauthn-json.js")
    assert finders.find("account/js/onload.js")


# --- policy: who must use MFA --------------------------------------------------------

def test_mfa_required_for_staff_by_default_and_pluggable(settings):
    assert policy.mfa_required(make_user("op", is_staff=True))
    plain = make_user("alice")
    assert not policy.mfa_required(plain)

    def dealer_check(user):
        return user.username == "alice"

    policy.register_mfa_required_check(dealer_check)
    try:
        assert policy.mfa_required(plain)
    finally:
        policy.MFA_REQUIRED_CHECKS.remove(dealer_check)
    settings.FLEETROOM_MFA_REQUIRED_FOR_ALL = True
    assert policy.mfa_required(make_user("bob"))


@pytest.mark.django_db(transaction=True)  # allauth sends MFA signals on commit
def test_required_mfa_confines_the_user_to_setup(caplog):
    caplog.set_level(logging.INFO, logger="fleetroom.accounts.audit")
    make_user("op", is_staff=True)
    client = Client()
    response = post_login(client, "op", PASSWORD)
    assert logged_in(client)
    assert client.get(response["Location"])["Location"] == reverse("mfa_index")
    assert client.get(reverse("home"))["Location"] == reverse("mfa_index")
    assert client.post(reverse("home")).status_code == 403
    index = client.get(reverse("mfa_index"))
    assert index.status_code == 200
    assert "requires two-factor authentication" in index.text
    assert client.get(reverse("account_change_password"))["Location"] == reverse("mfa_index")

    # Setting up TOTP is allowed (after confirming the password, as allauth asks
    # before any MFA change), and lifts the restriction.
    page = client.get(reverse("mfa_activate_totp"))
    assert page["Location"].startswith(reverse("account_reauthenticate"))
    response = client.post(page["Location"], {"password": PASSWORD})
    assert response["Location"] == reverse("mfa_activate_totp")
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    secret = client.session["mfa.totp.secret"]
    response = client.post(reverse("mfa_activate_totp"), {"code": totp_code(secret)})
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_view_recovery_codes")
    assert client.get(reverse("mfa_view_recovery_codes")).status_code == 200
    # Released: home answers normally (the dashboard, or a redirect to it — not MFA setup).
    home = client.get(reverse("home"))
    assert home.status_code in (200, 302)
    assert home.get("Location", "") != reverse("mfa_index")
    audited = [getattr(r, "audit_data", {}).get("type") for r in caplog.records
               if getattr(r, "audit_action", None) == audit_events.MFA_ADDED]
    assert audited == ["totp", "recovery_codes"]


def test_required_mfa_cannot_be_removed_while_it_is_the_only_factor():
    op = make_user("op", is_staff=True)
    enable_totp(op)
    adapter = MFAAdapter()
    totp = Authenticator.objects.get(user=op, type=Authenticator.Type.TOTP)
    codes = Authenticator.objects.get(user=op, type=Authenticator.Type.RECOVERY_CODES)
    assert not adapter.can_delete_authenticator(totp)
    assert adapter.can_delete_authenticator(codes)
    alice = make_user("alice")
    enable_totp(alice)
    assert adapter.can_delete_authenticator(
        Authenticator.objects.get(user=alice, type=Authenticator.Type.TOTP))


# --- API tokens: same rules as the web login -----------------------------------------

def api_request(ip="127.0.0.1"):
    return RequestFactory().post("/api/token", REMOTE_ADDR=ip)


def test_api_token_without_mfa():
    alice = make_user("alice")
    user = services.authenticate_for_api_token(api_request(), login="alice@example.com",
                                               password=PASSWORD)
    assert user == alice
    with pytest.raises(ApiAuthenticationFailed) as err:
        services.authenticate_for_api_token(api_request(), login="alice", password="nope " * 4)
    assert err.value.code == "invalid_credentials"


def test_api_token_needs_the_second_factor():
    alice = make_user("alice")
    enable_totp(alice)
    with pytest.raises(ApiAuthenticationFailed) as err:
        services.authenticate_for_api_token(api_request(), login="alice", password=PASSWORD)
    assert err.value.code == "mfa_code_required"
    with pytest.raises(ApiAuthenticationFailed) as err:
        services.authenticate_for_api_token(api_request(), login="alice", password=PASSWORD,
                                            code="000000")
    assert err.value.code == "invalid_credentials"
    code = totp_code(stored_totp_secret(alice))
    assert services.authenticate_for_api_token(api_request(), login="alice", password=PASSWORD,
                                               code=code) == alice


def test_api_token_refused_when_required_mfa_is_missing():
    make_user("op", is_staff=True)
    with pytest.raises(ApiAuthenticationFailed) as err:
        services.authenticate_for_api_token(api_request(), login="op", password=PASSWORD)
    assert err.value.code == "mfa_setup_required"


def test_api_token_wrong_codes_lock_the_name():
    alice = make_user("alice")
    enable_totp(alice)
    for _ in range(5):
        with pytest.raises(ApiAuthenticationFailed):
            services.authenticate_for_api_token(api_request(), login="alice",
                                                password=PASSWORD, code="123456")
    code = totp_code(stored_totp_secret(alice))
    with pytest.raises(ApiAuthenticationFailed) as err:
        services.authenticate_for_api_token(api_request("192.0.2.7"), login="alice",
                                            password=PASSWORD, code=code)
    assert err.value.code == "invalid_credentials"

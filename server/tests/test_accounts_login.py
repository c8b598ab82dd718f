"""Local login through allauth: username or e-mail, logout, no signup, password reset."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import translation
from fleetroom.accounts.testing import PASSWORD, assert_no_inline_code, make_user, post_login

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    """allauth's rate limits and TOTP replay guard live in the cache; a request to a
    /de/ page leaves German active in this thread."""
    cache.clear()
    yield
    cache.clear()
    translation.activate(settings.LANGUAGE_CODE)


@pytest.mark.parametrize("login", ["alice", "alice@example.com", "ALICE@Example.com"])
def test_login_with_username_or_email(login):
    user = make_user("alice")
    client = Client()
    response = post_login(client, login, PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert client.session[SESSION_KEY] == str(user.pk)
    user.refresh_from_db()
    assert user.last_login is not None


def test_wrong_password_is_refused_with_a_generic_message():
    make_user("alice")
    client = Client()
    response = post_login(client, "alice", "not the password at all")
    assert response.status_code == 200
    assert SESSION_KEY not in client.session
    assert "The username and/or password you specified are not correct." in response.text


def test_login_page_renders_without_signup_link_or_inline_script():
    response = Client().get(reverse("account_login"))
    assert response.status_code == 200
    html = response.text
    assert reverse("account_signup") not in html
    assert "Forgot your password?" in html
    assert 'id="passkey_login"' in html
    assert_no_inline_code(html)  # CSP is script-src 'self'; allauth's JS is static files
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_login_page_in_german():
    response = Client().get("/de/accounts/login/")
    assert response.status_code == 200
    assert '<html lang="de">' in response.text
    assert "Anmeldung" in response.text


def test_logout_needs_post():
    user = make_user("alice")
    client = Client()
    client.force_login(user)
    assert client.get(reverse("account_logout")).status_code == 200  # confirmation page
    assert SESSION_KEY in client.session
    response = client.post(reverse("account_logout"))
    assert response.status_code == 302
    assert SESSION_KEY not in client.session


def test_signup_is_closed():
    client = Client()
    page = client.get(reverse("account_signup"))
    assert page.status_code == 200
    assert "Sign Up Closed" in page.text
    client.post(reverse("account_signup"), {
        "username": "mallory", "email": "mallory@example.com",
        "password1": PASSWORD, "password2": PASSWORD})
    assert not get_user_model().objects.filter(username="mallory").exists()


def test_users_cannot_manage_their_own_email_addresses():
    user = make_user("alice")
    client = Client()
    client.force_login(user)
    assert client.get("/accounts/email/").status_code == 404
    response = client.post("/accounts/email/", {"action_add": "", "email": "evil@example.com"})
    assert response.status_code == 404


def test_password_reset_by_email_link():
    user = make_user("alice")
    client = Client()
    response = client.post(reverse("account_reset_password"), {"email": "alice@example.com"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/\s]+(/\S+/password/reset/key/\S+/)", mail.outbox[0].body)
    assert link, mail.outbox[0].body
    page = client.get(link.group(1), follow=True)
    assert page.status_code == 200
    new = "a completely different long passphrase"
    done = client.post(page.redirect_chain[-1][0] if page.redirect_chain else link.group(1),
                       {"password1": new, "password2": new})
    assert done.status_code == 302
    user.refresh_from_db()
    assert user.check_password(new)


def test_password_reset_for_unknown_address_looks_the_same_and_sends_nothing():
    make_user("alice")
    known = Client().post(reverse("account_reset_password"), {"email": "alice@example.com"})
    mail.outbox.clear()
    unknown = Client().post(reverse("account_reset_password"), {"email": "nobody@example.com"})
    assert (known.status_code, known["Location"]) == (unknown.status_code, unknown["Location"])
    assert mail.outbox == []


def test_inactive_user_cannot_log_in():
    user = make_user("alice")
    user.is_active = False
    user.save()
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert SESSION_KEY not in client.session


def test_password_change_mails_the_user_and_survives_a_dead_mail_server(settings):
    user = make_user("alice")
    client = Client()
    client.force_login(user)
    new = "an entirely new long passphrase"
    client.post(reverse("account_change_password"),
                {"oldpassword": PASSWORD, "password1": new, "password2": new})
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    newer = "yet another entirely new passphrase"
    response = client.post(reverse("account_change_password"),
                           {"oldpassword": new, "password1": newer, "password2": newer})
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(newer)

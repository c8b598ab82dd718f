"""Sessions: new key at login, 30-minute idle and 12-hour absolute limits, and every
other session ended when the password changes or the account is deactivated."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from fleetroom.accounts import services
from fleetroom.accounts.receivers import SESSION_AUTHENTICATED_AT
from fleetroom.accounts.testing import PASSWORD, make_user, post_login

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def logged_in(client) -> bool:
    return SESSION_KEY in client.session


def set_session_value(client, key, value):
    session = client.session
    session[key] = value
    session.save()


def test_session_key_is_rotated_at_login():
    make_user("alice")
    client = Client()
    session = client.session
    session["planted"] = "by an attacker who knows this key"
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    before = session.session_key
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)
    assert client.session.session_key != before
    assert not Session.objects.filter(session_key=before).exists()


def test_idle_timeout_is_thirty_minutes_and_renewed_by_use():
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    assert settings.SESSION_SAVE_EVERY_REQUEST
    make_user("alice")
    client = Client()
    post_login(client, "alice", PASSWORD)
    key = client.session.session_key
    expires = Session.objects.get(session_key=key).expire_date
    assert timedelta(minutes=29) < expires - timezone.now() <= timedelta(minutes=30)
    # Idle too long: the server no longer knows the session.
    Session.objects.filter(session_key=key).update(
        expire_date=timezone.now() - timedelta(seconds=1))
    assert client.get(reverse("account_change_password")).status_code == 302
    assert not logged_in(client)


def test_absolute_limit_ends_even_a_busy_session():
    assert settings.FLEETROOM_SESSION_ABSOLUTE_SECONDS == 12 * 3600
    make_user("alice")
    client = Client()
    post_login(client, "alice", PASSWORD)
    started = client.session[SESSION_AUTHENTICATED_AT]
    assert abs(started - time.time()) < 60
    set_session_value(client, SESSION_AUTHENTICATED_AT, time.time() - 11.9 * 3600)
    assert client.get(reverse("account_change_password")).status_code == 200
    set_session_value(client, SESSION_AUTHENTICATED_AT, time.time() - 12 * 3600 - 1)
    response = client.get(reverse("account_change_password"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert not logged_in(client)


def test_session_without_login_time_is_not_trusted():
    make_user("alice")
    client = Client()
    post_login(client, "alice", PASSWORD)
    session = client.session
    del session[SESSION_AUTHENTICATED_AT]
    session.save()
    client.get(reverse("home"))
    assert not logged_in(client)


def test_password_change_ends_every_other_session():
    make_user("alice")
    here, elsewhere = Client(), Client(REMOTE_ADDR="198.51.100.20")
    post_login(here, "alice", PASSWORD)
    post_login(elsewhere, "alice", PASSWORD)
    other_key = elsewhere.session.session_key
    assert UserSession.objects.filter(user__username="alice").count() == 2
    new = "an entirely new long passphrase"
    response = here.post(reverse("account_change_password"),
                         {"oldpassword": PASSWORD, "password1": new, "password2": new})
    assert response.status_code == 302
    assert logged_in(here)
    assert here.get(reverse("account_change_password")).status_code == 200
    assert not Session.objects.filter(session_key=other_key).exists()
    assert elsewhere.get(reverse("account_change_password")).status_code == 302
    assert not logged_in(elsewhere)


def test_sessions_die_even_when_not_indexed():
    """A session the index does not know (e.g. force_login) still dies: Django checks
    the password hash stored in every session."""
    user = make_user("alice")
    stray = Client()
    stray.force_login(user)
    services.do_set_password(user, "an entirely new long passphrase", acting_user=None)
    stray.get(reverse("home"))
    assert not logged_in(stray)


def test_deactivation_ends_all_sessions():
    user = make_user("alice")
    one, two = Client(), Client()
    post_login(one, "alice", PASSWORD)
    post_login(two, "alice", PASSWORD)
    keys = [one.session.session_key, two.session.session_key]
    services.do_deactivate_user(user, reason="left the company", acting_user=None)
    assert not Session.objects.filter(session_key__in=keys).exists()
    assert UserSession.objects.filter(user=user).count() == 0
    one.get(reverse("home"))
    assert not logged_in(one)


def test_user_can_see_and_end_their_sessions():
    make_user("alice")
    client = Client()
    post_login(client, "alice", PASSWORD)
    page = client.get(reverse("usersessions_list"))
    assert page.status_code == 200

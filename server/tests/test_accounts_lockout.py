"""Lockout after 5 failures (axes): by name and by name+address, growing cool-off,
admin unlock, second-factor failures counted, and no way to tell a lockout apart."""

from __future__ import annotations

import logging
import re
from datetime import UTC, timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from fleetroom.accounts import lockout, policy, services, signals
from fleetroom.accounts.models import LockoutEvent
from fleetroom.accounts.testing import (
    PASSWORD,
    enable_totp,
    make_user,
    post_code,
    post_login,
    stored_totp_secret,
    totp_code,
)

pytestmark = pytest.mark.django_db
WRONG = "definitely not the right password"


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def fail(client, login="alice", times=5, **extra):
    for _ in range(times):
        response = post_login(client, login, WRONG, **extra)
        assert response.status_code == 200
    return response


def logged_in(client) -> bool:
    return SESSION_KEY in client.session


def age_everything(delta: timedelta) -> None:
    """Move every failure and lockout into the past, as if ``delta`` had passed
    (which also ends allauth's one-minute per-address rate-limit window)."""
    cache.clear()
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= delta
        attempt.save(update_fields=["attempt_time"])
    for event in LockoutEvent.objects.all():
        event.locked_at -= delta
        event.locked_until -= delta
        event.save(update_fields=["locked_at", "locked_until"])


def test_sixth_attempt_with_the_right_password_is_refused():
    make_user("alice")
    client = Client()
    fail(client, times=5)
    response = post_login(client, "alice", PASSWORD)
    assert response.status_code == 200
    assert not logged_in(client)
    assert "The username and/or password you specified are not correct." in response.text
    assert LockoutEvent.objects.filter(username="alice").count() == 1


def test_four_failures_do_not_lock():
    make_user("alice")
    client = Client()
    fail(client, times=4)
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)


def test_rotating_addresses_does_not_help():
    make_user("alice")
    for i in range(5):
        fail(Client(), times=1, REMOTE_ADDR=f"198.51.100.{i + 1}")
    client = Client()
    post_login(client, "alice", PASSWORD, REMOTE_ADDR="203.0.113.9")
    assert not logged_in(client)


def test_username_and_email_count_as_one_name():
    make_user("alice")
    client = Client()
    fail(client, "alice", times=3)
    fail(client, "Alice@Example.com", times=2)
    post_login(client, "alice", PASSWORD)
    assert not logged_in(client)
    assert set(AccessAttempt.objects.values_list("username", flat=True)) == {"alice"}


def test_lockout_expires_after_the_cool_off():
    make_user("alice")
    fail(Client())
    age_everything(timedelta(minutes=14))
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert not logged_in(client)
    age_everything(timedelta(minutes=2))  # 16 minutes in all: past the 15-minute cool-off
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)


def test_cool_off_doubles_with_each_lockout_and_is_capped():
    make_user("alice")
    fail(Client())
    age_everything(timedelta(minutes=16))
    fail(Client())  # second lockout within the memory window: 30 minutes
    second = LockoutEvent.objects.order_by("-locked_at").first()
    assert second.number == 2
    assert second.locked_until - second.locked_at == timedelta(minutes=30)
    age_everything(timedelta(minutes=16))
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert not logged_in(client)
    age_everything(timedelta(minutes=15))
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)
    assert lockout.cool_off_for("alice", lockouts=3) == timedelta(hours=1)
    assert lockout.cool_off_for("alice", lockouts=9) == timedelta(hours=24)
    assert lockout.cool_off_for("alice", lockouts=500) == timedelta(hours=24)


def test_one_users_login_does_not_shorten_anothers_lockout():
    """axes' stock clean-up would delete alice's attempts older than bob's 15 minutes."""
    make_user("alice")
    make_user("bob")
    fail(Client())
    age_everything(timedelta(minutes=16))
    fail(Client())  # alice: 30 minutes now
    age_everything(timedelta(minutes=20))
    bob = Client()
    post_login(bob, "bob", PASSWORD)
    assert logged_in(bob)
    alice = Client()
    post_login(alice, "alice", PASSWORD)
    assert not logged_in(alice)


def test_unknown_names_lock_like_real_ones():
    client = Client()
    fail(client, "nobody")
    assert LockoutEvent.objects.filter(username="nobody", user__isnull=True).exists()


def test_lockout_alerts_once_and_is_audited(caplog):
    make_user("alice")
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    signals.user_locked_out.connect(receiver)
    try:
        with caplog.at_level(logging.WARNING, logger="fleetroom.accounts.audit"):
            client = Client()
            fail(client, times=7)  # two refused tries after the lockout: no new alert
    finally:
        signals.user_locked_out.disconnect(receiver)
    assert len(received) == 1
    assert received[0]["username"] == "alice"
    assert received[0]["user"].username == "alice"
    assert received[0]["number"] == 1
    warnings = [r for r in caplog.records if r.getMessage().startswith("accounts.locked_out")]
    assert len(warnings) == 1


def test_admin_unlock():
    alice = make_user("alice")
    admin = make_user("admin", is_superuser=True)
    fail(Client())
    with pytest.raises(PermissionDenied):
        services.do_unlock(alice, acting_user=make_user("eve"))
    assert services.do_unlock(alice, acting_user=admin) >= 1
    event = LockoutEvent.objects.get(username="alice")
    assert event.lifted_by == admin
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)
    assert lockout.cool_off_for("alice") == timedelta(minutes=15)  # escalation reset


def test_unlock_permission_can_come_from_a_policy_hook():
    alice = make_user("alice")
    dealer_admin = make_user("dealer_admin")
    fail(Client())

    def manages_alice(actor, target):
        return actor.pk == dealer_admin.pk and target.pk == alice.pk

    policy.register_account_admin_check(manages_alice)
    try:
        services.do_unlock("alice@example.com", acting_user=dealer_admin)
    finally:
        policy.ACCOUNT_ADMIN_CHECKS.remove(manages_alice)
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)


def test_unlock_from_the_command_line():
    make_user("alice")
    fail(Client())
    call_command("unlock_user", "alice@example.com")
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)


def test_axes_reset_username_command_also_works():
    make_user("alice")
    fail(Client())
    call_command("axes_reset_username", "alice")
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)


def test_password_reset_lifts_the_lockout():
    from fleetroom.accounts.receivers import on_password_reset

    alice = make_user("alice")
    fail(Client())
    on_password_reset(sender=None, request=None, user=alice)
    client = Client()
    post_login(client, "alice", PASSWORD)
    assert logged_in(client)


# --- second factor -----------------------------------------------------------------

def test_wrong_totp_codes_count_and_lock_the_name():
    alice = make_user("alice")
    enable_totp(alice)
    client = Client()
    response = post_login(client, "alice", PASSWORD)
    assert response["Location"] == reverse("mfa_authenticate")
    for _ in range(5):
        response = post_code(client, "000000")
        assert response.status_code == 200
        assert "Incorrect code." in response.text
    right = totp_code(stored_totp_secret(alice))
    response = post_code(client, right)
    assert not logged_in(client)
    assert "Incorrect code." in response.text
    # The half-done login was dropped: back to the password, which is refused now.
    assert client.get(reverse("mfa_authenticate"))["Location"] == reverse("account_login")
    post_login(client, "alice", PASSWORD)
    assert not logged_in(client)


def test_password_and_code_failures_add_up():
    alice = make_user("alice")
    enable_totp(alice)
    fail(Client(), times=3)
    client = Client()
    post_login(client, "alice", PASSWORD)
    post_code(client, "111111")
    post_code(client, "222222")  # fifth failure
    post_code(client, totp_code(stored_totp_secret(alice)))
    assert not logged_in(client)


# --- no enumeration ----------------------------------------------------------------

def _normalised(response, typed: str) -> str:
    html = response.text.replace(f'value="{typed}"', 'value="NAME"')
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)


class CountingHasher(MD5PasswordHasher):
    """Counts hash computations, the expensive step that sets the response time
    (MD5's ``verify`` computes through ``encode`` too)."""

    algorithm = "md5"
    calls = 0

    def encode(self, password, salt):
        CountingHasher.calls += 1
        return super().encode(password, salt)


def test_unknown_wrong_and_locked_look_the_same(settings):
    make_user("alice")
    make_user("carol")
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    fail(Client(), "carol")  # carol is locked

    def attempt(login, password):
        CountingHasher.calls = 0
        response = post_login(Client(), login, password)
        return response, CountingHasher.calls

    unknown, unknown_hashes = attempt("nobody", PASSWORD)
    wrong, wrong_hashes = attempt("alice", WRONG)
    locked, locked_hashes = attempt("carol", PASSWORD)
    assert unknown.status_code == wrong.status_code == locked.status_code == 200
    assert _normalised(unknown, "nobody") == _normalised(wrong, "alice")
    assert _normalised(wrong, "alice") == _normalised(locked, "carol")
    assert "locked" not in locked.text.lower()
    # One password hash in each case, so the response time does not tell them apart.
    assert unknown_hashes == wrong_hashes == locked_hashes == 1


def test_lockout_mails_the_account_holder_once_and_nobody_for_unknown_names():
    from django.core import mail

    make_user("alice", email="alice@customer.test")
    client = Client()
    fail(client, times=7)  # locked at the 5th; the refused tries after it send nothing
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@customer.test"]
    assert "alice" in message.body
    event = LockoutEvent.objects.get(username="alice")
    assert event.locked_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M") in message.body
    fail(Client(), "nobody")
    assert len(mail.outbox) == 1  # an unknown name is locked, but no one is mailed

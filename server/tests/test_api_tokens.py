"""API tokens: issuance through the login rules (password, lockout after 5 failures, MFA),
stored only as a hash, acting only while live (revoked, expired, deactivated, password
changed → 401), the owner's list and revoke, the web page, and the audit trail."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from fleetroom.accounts import services as accounts
from fleetroom.accounts.models import LockoutEvent
from fleetroom.accounts.testing import (
    PASSWORD,
    assert_no_inline_code,
    enable_totp,
    make_user,
    post_login,
    stored_totp_secret,
    totp_code,
    unused_recovery_codes,
)
from fleetroom.api import tokens
from fleetroom.api.models import ApiToken
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.services import do_create_tenant, do_grant_membership

from server.tests.test_api_support import bearer, get, issue

pytestmark = pytest.mark.django_db
WRONG = "definitely not the right password"
TOKEN_RE = re.compile(r"^frt_([A-Za-z0-9]{12})_[A-Za-z0-9]{40}$")


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client():
    return Client()


def create(client, login="alice", password=PASSWORD, remote_addr="127.0.0.1", **fields):
    body = {"login": login, "password": password, "name": "script", **fields}
    return client.post("/api/v1/tokens", body, content_type="application/json",
                       REMOTE_ADDR=remote_addr)


def actions(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def error(response) -> str:
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"detail", "code"}
    assert body["detail"]
    return body["code"]


# --- issuance -------------------------------------------------------------------------

def test_issue_with_password(client):
    alice = make_user("alice")
    before = timezone.now()
    response = create(client, name="meter export")
    assert response.status_code == 201
    body = response.json()
    match = TOKEN_RE.match(body["token"])
    assert match
    assert match.group(1) == body["key_id"]
    assert body["name"] == "meter export"
    assert body["state"] == "active"
    assert body["created_via"] == "api"
    row = ApiToken.objects.get(key_id=body["key_id"])
    assert row.user == alice
    # Default lifetime: 90 days.
    assert timedelta(days=90) <= row.expires_at - before < timedelta(days=90, minutes=1)
    # Only a keyed hash is stored: the secret appears in no column.
    secret = body["token"].split("_")[2]
    assert all(secret not in str(getattr(row, f.attname)) for f in ApiToken._meta.fields)
    assert tokens.check_secret(row.key_id, secret, row.secret_hash)
    # The token works.
    listed = get(client, "/api/v1/tokens", body["token"])
    assert listed.status_code == 200
    assert [t["key_id"] for t in listed.json()["items"]] == [body["key_id"]]
    assert "token" not in listed.json()["items"][0]  # never shown again
    (event,) = actions("api.token_issued")
    assert event.actor_id == alice.pk
    assert event.data["key_id"] == body["key_id"]
    assert event.data["created_via"] == "api"
    assert len(actions("accounts.api_token_authenticated")) == 1


def test_issue_by_email_and_with_a_lifetime(client):
    make_user("alice")
    response = create(client, login="ALICE@example.com", expires_in_days=7)
    assert response.status_code == 201
    row = ApiToken.objects.get(key_id=response.json()["key_id"])
    assert timedelta(days=6, hours=23) < row.expires_at - timezone.now() <= timedelta(days=7)


def test_lifetime_beyond_the_maximum_is_refused(client):
    make_user("alice")
    response = create(client, expires_in_days=366)
    assert response.status_code == 422
    assert error(response) == "validation_error"
    assert response.json()["errors"][0]["loc"] == ["body", "body", "expires_in_days"]
    assert not ApiToken.objects.exists()


def test_wrong_password_and_unknown_user_answer_alike(client):
    make_user("alice")
    wrong = create(client, password=WRONG)
    unknown = create(client, login="mallory")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert error(wrong) == "invalid_credentials"
    assert not ApiToken.objects.exists()
    failed = actions("api.token_issue_failed")
    assert [e.data for e in failed] == [{"login": "alice", "code": "invalid_credentials"},
                                        {"login": "mallory", "code": "invalid_credentials"}]
    assert len(actions("accounts.login_failed")) == 2


def test_mfa_code_required_and_checked(client):
    alice = make_user("alice")
    enable_totp(alice)
    response = create(client)
    assert response.status_code == 401
    assert error(response) == "mfa_code_required"
    response = create(client, code="000000")
    assert response.status_code == 401
    assert error(response) == "invalid_credentials"
    response = create(client, code=totp_code(stored_totp_secret(alice)))
    assert response.status_code == 201
    codes = [e.data["code"] for e in actions("api.token_issue_failed")]
    assert codes == ["mfa_code_required", "invalid_credentials"]


def test_recovery_code_works_once(client):
    alice = make_user("alice")
    enable_totp(alice)
    code = unused_recovery_codes(alice)[0]
    assert create(client, code=code).status_code == 201
    again = create(client, code=code)
    assert again.status_code == 401
    assert error(again) == "invalid_credentials"


def test_required_mfa_must_be_set_up_first(client):
    dealer = do_create_tenant(do_create_tenant(None, "operator", "Platform", SYSTEM),
                              "dealer", "Dealer", SYSTEM)
    tech = make_user("tech")
    do_grant_membership(tech, dealer, role="dealer_technician", acting_user=SYSTEM)
    response = create(client, login="tech")
    assert response.status_code == 401
    assert error(response) == "mfa_setup_required"
    # A token made before the requirement applied stops working until MFA is set up.
    old = issue(make_user("later"))
    do_grant_membership(ApiToken.objects.get().user, dealer, role="dealer_technician",
                        acting_user=SYSTEM)
    response = get(client, "/api/v1/tokens", old)
    assert response.status_code == 401
    assert error(response) == "token_mfa_setup_required"
    enable_totp(ApiToken.objects.get().user)
    assert get(client, "/api/v1/tokens", old).status_code == 200


def test_sixth_attempt_with_the_right_password_is_refused(client):
    alice = make_user("alice")
    for _ in range(5):
        assert create(client, password=WRONG).status_code == 401
    response = create(client)
    assert response.status_code == 401
    assert error(response) == "invalid_credentials"  # a lock looks like a wrong password
    assert LockoutEvent.objects.filter(username="alice").count() == 1
    assert len(actions("accounts.locked_out")) == 1
    assert not ApiToken.objects.exists()
    # From another address too (the name alone is locked).
    other = create(client, remote_addr="203.0.113.9")
    assert other.status_code == 401
    # An administrator's unlock lets the right password through again.
    accounts.do_unlock(alice, acting_user=None)
    assert create(client).status_code == 201


def test_four_failures_do_not_lock(client):
    make_user("alice")
    for _ in range(4):
        create(client, password=WRONG)
    assert create(client).status_code == 201


def test_the_lock_expires(client):
    make_user("alice")
    for _ in range(5):
        create(client, password=WRONG)
    assert create(client).status_code == 401
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= timedelta(minutes=16)
        attempt.save(update_fields=["attempt_time"])
    for event in LockoutEvent.objects.all():
        event.locked_at -= timedelta(minutes=16)
        event.locked_until -= timedelta(minutes=16)
        event.save(update_fields=["locked_at", "locked_until"])
    assert create(client).status_code == 201


def test_wrong_codes_lock_the_name(client):
    alice = make_user("alice")
    enable_totp(alice)
    for _ in range(5):
        assert create(client, code="123456").status_code == 401
    response = create(client, code=totp_code(stored_totp_secret(alice)))
    assert response.status_code == 401
    assert error(response) == "invalid_credentials"


def test_issuance_is_rate_limited_per_address(client, settings):
    settings.FLEETROOM_API_TOKEN_ISSUE_RATE = "3/m"
    make_user("alice")
    for _ in range(3):
        create(client, password=WRONG, login="nobody-here")
    response = create(client)
    assert response.status_code == 429
    assert error(response) == "throttled"
    assert int(response["Retry-After"]) >= 1
    # Another address has its own budget.
    assert create(client, remote_addr="198.51.100.7").status_code == 201


def test_token_limit_per_user(client, settings):
    settings.FLEETROOM_API_MAX_TOKENS_PER_USER = 2
    make_user("alice")
    assert create(client).status_code == 201
    assert create(client).status_code == 201
    response = create(client)
    assert response.status_code == 409
    assert error(response) == "token_limit_reached"


def test_malformed_body_is_a_400(client):
    response = client.post("/api/v1/tokens", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert error(response) == "bad_request"


# --- using a token ----------------------------------------------------------------------

@pytest.mark.parametrize(("header", "code"), [
    (None, "not_authenticated"),
    ("Basic YWxpY2U6c2VjcmV0", "not_authenticated"),
    ("Bearer", "invalid_token"),
    ("Bearer not-a-token", "invalid_token"),
    ("Bearer frt_AAAAAAAAAAAA_" + "B" * 40, "invalid_token"),  # well-formed, unknown
])
def test_missing_or_malformed_tokens(client, header, code):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/devices", headers=headers)
    assert response.status_code == 401
    assert error(response) == code
    assert response["WWW-Authenticate"] == 'Bearer realm="fleetroom"'


def test_wrong_secret_for_a_real_key_id(client):
    token = issue(make_user("alice"))
    key_id = TOKEN_RE.match(token).group(1)
    forged = f"frt_{key_id}_{'x' * 40}"
    response = get(client, "/api/v1/tokens", forged)
    assert response.status_code == 401
    assert error(response) == "invalid_token"


def test_session_cookies_are_not_credentials(client):
    alice = make_user("alice")
    client.force_login(alice)
    response = client.get("/api/v1/tokens")
    assert response.status_code == 401


def test_expired_token(client):
    token = issue(make_user("alice"))
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = get(client, "/api/v1/tokens", token)
    assert response.status_code == 401
    assert error(response) == "token_expired"


def test_revoked_token_via_the_api(client):
    alice = make_user("alice")
    keep, drop = issue(alice, "keep"), issue(alice, "drop")
    drop_id = TOKEN_RE.match(drop).group(1)
    response = client.delete(f"/api/v1/tokens/{drop_id}", headers=bearer(keep))
    assert response.status_code == 204
    response = get(client, "/api/v1/tokens", drop)
    assert response.status_code == 401
    assert error(response) == "token_revoked"
    assert get(client, "/api/v1/tokens", keep).status_code == 200
    row = ApiToken.objects.get(key_id=drop_id)
    assert row.revoked_reason == "owner"
    (event,) = actions("api.token_revoked")
    assert event.data == {"token_id": row.pk, "key_id": drop_id, "reason": "owner"}
    # Revoking again is harmless; a token can revoke itself.
    assert client.delete(f"/api/v1/tokens/{drop_id}", headers=bearer(keep)).status_code == 204
    keep_id = TOKEN_RE.match(keep).group(1)
    assert client.delete(f"/api/v1/tokens/{keep_id}", headers=bearer(keep)).status_code == 204
    assert get(client, "/api/v1/tokens", keep).status_code == 401


def test_someone_elses_token_is_a_404(client):
    alice_token = issue(make_user("alice"))
    bob_token = issue(make_user("bob"))
    bob_id = TOKEN_RE.match(bob_token).group(1)
    response = client.delete(f"/api/v1/tokens/{bob_id}", headers=bearer(alice_token))
    assert response.status_code == 404
    assert error(response) == "not_found"
    assert get(client, "/api/v1/tokens", bob_token).status_code == 200
    listed = get(client, "/api/v1/tokens", alice_token).json()
    assert [t["key_id"] for t in listed["items"]] != [bob_id]
    assert listed["count"] == 1


def test_deactivation_revokes_every_token(client):
    alice = make_user("alice")
    first, second = issue(alice, "one"), issue(alice, "two")
    accounts.do_deactivate_user(alice, reason="left the company", acting_user=None)
    for token in (first, second):
        response = get(client, "/api/v1/tokens", token)
        assert response.status_code == 401
        assert error(response) == "token_revoked"
    assert set(ApiToken.objects.values_list("revoked_reason", flat=True)) == {"deactivated"}
    assert {e.data["reason"] for e in actions("api.token_revoked")} == {"deactivated"}
    # Reactivation does not bring them back.
    accounts.do_reactivate_user(alice, acting_user=None)
    assert get(client, "/api/v1/tokens", first).status_code == 401


def test_an_inactive_user_without_the_signal_is_refused_too(client):
    alice = make_user("alice")
    token = issue(alice)
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    response = get(client, "/api/v1/tokens", token)
    assert response.status_code == 401
    assert error(response) == "token_inactive"


def test_password_set_by_an_admin_revokes_tokens(client):
    alice = make_user("alice")
    token = issue(alice)
    accounts.do_set_password(alice, "another long enough passphrase", acting_user=None)
    assert get(client, "/api/v1/tokens", token).status_code == 401
    assert ApiToken.objects.get().revoked_reason == "password_changed"


def test_password_changed_in_the_web_ui_revokes_tokens(client):
    alice = make_user("alice")
    token = issue(alice)
    web = Client()
    post_login(web, "alice", PASSWORD)
    new = "an entirely new long passphrase"
    response = web.post(reverse("account_change_password"),
                        {"oldpassword": PASSWORD, "password1": new, "password2": new})
    assert response.status_code == 302
    response = get(client, "/api/v1/tokens", token)
    assert response.status_code == 401
    assert error(response) == "token_revoked"
    assert ApiToken.objects.get().revoked_reason == "password_changed"


def test_password_changed_without_any_signal_still_ends_the_token(client):
    """``manage changepassword`` sends no signal; the password fingerprint catches it."""
    alice = make_user("alice")
    token = issue(alice)
    alice.set_password("changed from the command line")
    alice.save(update_fields=["password"])
    response = get(client, "/api/v1/tokens", token)
    assert response.status_code == 401
    assert error(response) == "token_revoked"
    assert ApiToken.objects.get().revoked_reason == "password_changed"


def test_last_use_is_recorded(client):
    token = issue(make_user("alice"))
    assert ApiToken.objects.get().last_used_at is None
    get(client, "/api/v1/tokens", token, REMOTE_ADDR="192.0.2.10")
    row = ApiToken.objects.get()
    assert row.last_used_at is not None
    assert row.last_used_ip == "127.0.0.1"  # the test client's address


# --- the web page -----------------------------------------------------------------------

def logged_in_client(username="alice", *, reauthenticated=True) -> Client:
    web = Client()
    response = post_login(web, username, PASSWORD)
    assert response.status_code == 302
    if reauthenticated:
        response = web.post(reverse("account_reauthenticate"), {"password": PASSWORD})
        assert response.status_code == 302
    return web


def test_web_page_needs_a_login():
    response = Client().get(reverse("api_token_list"))
    assert response.status_code == 302
    assert reverse("account_login") in response["Location"]


def test_web_page_creates_lists_and_revokes(client):
    alice = make_user("alice")
    web = logged_in_client()
    page = web.get(reverse("api_token_list"))
    assert page.status_code == 200
    assert_no_inline_code(page.text)
    assert "no-store" in page["Cache-Control"]
    created = web.post(reverse("api_token_list"), {"name": "backup job", "days": "30"})
    assert created.status_code == 200
    assert_no_inline_code(created.text)
    row = ApiToken.objects.get(user=alice)
    assert row.created_via == "web"
    assert row.name == "backup job"
    secret = re.search(r'value="(frt_[A-Za-z0-9_]+)"', created.text).group(1)
    assert TOKEN_RE.match(secret).group(1) == row.key_id
    assert timedelta(days=29, hours=23) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert get(client, "/api/v1/tokens", secret).status_code == 200
    # Shown once: the list afterwards has the key id, never the secret.
    again = web.get(reverse("api_token_list"))
    assert row.key_id in again.text
    assert secret not in again.text
    response = web.post(reverse("api_token_revoke", args=[row.pk]))
    assert response.status_code == 302
    assert get(client, "/api/v1/tokens", secret).status_code == 401
    assert actions("api.token_revoked")[0].data["reason"] == "owner"


def test_web_page_refuses_a_bad_name():
    make_user("alice")
    web = logged_in_client()
    response = web.post(reverse("api_token_list"), {"name": "   ", "days": "30"})
    assert response.status_code == 200
    assert not ApiToken.objects.exists()


def test_web_page_cannot_revoke_someone_elses_token():
    make_user("alice")
    bob_token = issue(make_user("bob"))
    web = logged_in_client()
    row = ApiToken.objects.get()
    assert web.post(reverse("api_token_revoke", args=[row.pk])).status_code == 404
    assert get(Client(), "/api/v1/tokens", bob_token).status_code == 200


def test_creating_on_the_web_page_asks_for_the_password_again():
    """A token outlives the session, so minting one needs a fresh password (allauth's
    re-authentication); the suspended request then completes and shows the token."""
    alice = make_user("alice")
    web = logged_in_client(reauthenticated=False)
    response = web.post(reverse("api_token_list"), {"name": "nightly", "days": "30"})
    assert response.status_code == 302
    assert reverse("account_reauthenticate") in response["Location"]
    assert not ApiToken.objects.exists()
    wrong = web.post(response["Location"], {"password": WRONG})
    assert wrong.status_code == 200
    assert not ApiToken.objects.exists()
    done = web.post(response["Location"], {"password": PASSWORD})
    assert done.status_code == 200
    row = ApiToken.objects.get(user=alice)
    assert row.name == "nightly"
    assert re.search(rf'value="frt_{row.key_id}_[A-Za-z0-9]{{40}}"', done.text)


def test_web_page_posts_need_csrf():
    alice = make_user("alice")
    token_row_owner = issue(alice)
    web = Client(enforce_csrf_checks=True)
    page = web.get(reverse("account_login"))
    web.post(reverse("account_login"), {"login": "alice", "password": PASSWORD,
                                        "csrfmiddlewaretoken": page.context["csrf_token"]})
    assert web.session.get("_auth_user_id") == str(alice.pk)
    assert web.post(reverse("api_token_list"), {"name": "x", "days": "30"}).status_code == 403
    row = ApiToken.objects.get()
    assert web.post(reverse("api_token_revoke", args=[row.pk])).status_code == 403
    assert get(Client(), "/api/v1/tokens", token_row_owner).status_code == 200

"""The project-wide route matrix: every URL pattern is listed somewhere, and the
routes not covered by an app's own matrix (accounts, allauth, language, health,
home) are checked here for anonymous access, CSRF and security headers.

Per-app matrices (role × own/child/sibling/foreign tenant → outcome):
``test_admin_matrix.py`` (administration pages), ``test_api_matrix.py`` (REST API),
``test_fleet_matrix.py`` (fleet pages).  A new route in any urls module that no
matrix lists fails :func:`test_every_route_is_in_a_matrix`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from fleetroom.accounts.testing import make_user
from fleetroom.core.middleware import CSP

pytestmark = pytest.mark.django_db

PUBLIC = "public"  # anyone, logged in or not
LOGIN = "login"  # anonymous visitors are sent to the login page
PENDING = "pending"  # a step of a login in progress: without one, back to the login
GONE = "gone"  # shadowed on purpose (e-mail addresses are set by administrators): 404

# name (or pattern for unnamed routes) → (who, methods that change state)
ACCOUNT_ROUTES: dict[str, tuple[str, frozenset[str]]] = {
    "healthz": (PUBLIC, frozenset()),
    "home": (PUBLIC, frozenset()),
    "set_language": (PUBLIC, frozenset({"POST"})),
    "fleetroom_account_email": (GONE, frozenset()),
    "account_login": (PUBLIC, frozenset({"POST"})),
    "account_logout": (PUBLIC, frozenset({"POST"})),
    "account_inactive": (PUBLIC, frozenset()),
    "account_signup": (PUBLIC, frozenset({"POST"})),
    "account_reauthenticate": (LOGIN, frozenset({"POST"})),
    "account_email": (GONE, frozenset()),
    "account_email_verification_sent": (PUBLIC, frozenset()),
    "account_change_password": (LOGIN, frozenset({"POST"})),
    "account_set_password": (LOGIN, frozenset({"POST"})),
    "account_reset_password": (PUBLIC, frozenset({"POST"})),
    "account_confirm_login_code": (PENDING, frozenset({"POST"})),
    "account_confirm_email": (PUBLIC, frozenset({"POST"})),
    "account_reset_password_from_key_done": (PUBLIC, frozenset()),
    "account_reset_password_from_key": (PUBLIC, frozenset({"POST"})),
    "account_reset_password_done": (PUBLIC, frozenset()),
    "mfa_index": (LOGIN, frozenset()),
    "mfa_authenticate": (PENDING, frozenset({"POST"})),
    "mfa_reauthenticate": (LOGIN, frozenset({"POST"})),
    "mfa_activate_totp": (LOGIN, frozenset({"POST"})),
    "mfa_deactivate_totp": (LOGIN, frozenset({"POST"})),
    "mfa_view_recovery_codes": (LOGIN, frozenset()),
    "mfa_generate_recovery_codes": (LOGIN, frozenset({"POST"})),
    "mfa_download_recovery_codes": (LOGIN, frozenset()),
    "mfa_list_webauthn": (LOGIN, frozenset()),
    "mfa_add_webauthn": (LOGIN, frozenset({"POST"})),
    "mfa_reauthenticate_webauthn": (LOGIN, frozenset({"POST"})),
    "mfa_remove_webauthn": (LOGIN, frozenset({"POST"})),
    "mfa_edit_webauthn": (LOGIN, frozenset({"POST"})),
    "mfa_login_webauthn": (PUBLIC, frozenset({"POST"})),
    "socialaccount_login_cancelled": (PUBLIC, frozenset()),
    "socialaccount_login_error": (PUBLIC, frozenset()),
    "socialaccount_signup": (PENDING, frozenset({"POST"})),
    "socialaccount_connections": (LOGIN, frozenset({"POST"})),
    "openid_connect_login": (PUBLIC, frozenset({"POST"})),
    "openid_connect_callback": (PUBLIC, frozenset()),
    "usersessions_list": (LOGIN, frozenset({"POST"})),
    # allauth's old addresses, kept as redirects to the new ones
    "accounts/social/login/cancelled/": (PUBLIC, frozenset()),
    "accounts/social/login/error/": (PUBLIC, frozenset()),
    "accounts/social/signup/": (PUBLIC, frozenset()),
    "accounts/social/connections/": (PUBLIC, frozenset()),
}

# Concrete addresses for patterns with arguments (objects that do not exist: the
# answer must still be orderly).
SAMPLE_PATH = {
    "account_confirm_email": "/accounts/confirm-email/not-a-key/",
    "account_reset_password_from_key": "/accounts/password/reset/key/1-not-a-key/",
    "mfa_remove_webauthn": "/accounts/2fa/webauthn/keys/999999/remove/",
    "mfa_edit_webauthn": "/accounts/2fa/webauthn/keys/999999/edit/",
    "openid_connect_login": "/accounts/oidc/no-such-provider/login/",
    "openid_connect_callback": "/accounts/oidc/no-such-provider/login/callback/",
}

# App matrices: the urls module's routes must all be in that matrix.
APP_MATRICES = {
    "fleetroom.tenancy.urls": ("server.tests.test_admin_matrix", "tenancy:"),
    "fleetroom.api.urls": ("server.tests.test_api_matrix", "api"),
    "fleetroom.fleet.urls": ("server.tests.test_fleet_matrix", "fleet:"),
    "fleetroom.agents.urls_protocol": ("server.tests.test_agents_protocol_matrix",
                                       "agent_protocol:"),
    "fleetroom.agents.urls": ("server.tests.test_agents_matrix", "agents:"),
}


def _walk(patterns: list, prefix: str = "", module: str = "") -> Iterator[tuple[str, str, str]]:
    for p in patterns:
        if isinstance(p, URLResolver):
            mod = getattr(p.urlconf_module, "__name__", module)
            yield from _walk(p.url_patterns, prefix + str(p.pattern), mod)
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.name or "", module


ALL = list(_walk(get_resolver().url_patterns))


def _app_of(module: str) -> str | None:
    return next((m for m in APP_MATRICES if module == m), None)


def _path(key: str, pattern: str) -> str:
    """A concrete address for the pattern (regex anchors dropped; samples for arguments)."""
    return SAMPLE_PATH.get(key) or "/" + pattern.replace("^", "").replace("$", "")


def test_every_route_is_in_a_matrix():
    unlisted = []
    for pattern, name, module in ALL:
        app = _app_of(module)
        if app is None:
            key = name or pattern
            if key not in ACCOUNT_ROUTES:
                unlisted.append(f"{pattern} ({name or 'unnamed'}, {module})")
            continue
        matrix_module = importlib.import_module(APP_MATRICES[app][0])
        names = set(matrix_module.ROUTES) | set(getattr(matrix_module, "AGENT_ROUTES", ()))
        if name.split(":")[-1] not in names and name not in names:
            unlisted.append(f"{pattern} ({name}) is not in {APP_MATRICES[app][0]}.ROUTES")
    assert not unlisted, "routes missing from every matrix:\n" + "\n".join(unlisted)


def test_no_account_route_is_stale():
    names = {name or pattern for pattern, name, _ in ALL}
    assert set(ACCOUNT_ROUTES) <= names, set(ACCOUNT_ROUTES) - names


ACCOUNT_CASES = [(pattern, name or pattern) for pattern, name, module in ALL
                 if _app_of(module) is None]


def _headers_ok(response) -> None:
    assert response.headers.get("Content-Security-Policy") == CSP
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("Referrer-Policy") == "same-origin"


@pytest.mark.parametrize(("pattern", "key"), ACCOUNT_CASES, ids=[k for _, k in ACCOUNT_CASES])
def test_anonymous_visitor(pattern, key):
    who, _ = ACCOUNT_ROUTES[key]
    response = Client().get(_path(key, pattern))
    _headers_ok(response)
    assert response.status_code < 500
    location = response.headers.get("Location", "")
    if who == LOGIN:
        assert response.status_code == 302
        assert location.startswith("/accounts/login/"), location
    elif who == GONE:
        assert response.status_code == 404
    elif who == PENDING:
        assert response.status_code == 302, response.status_code
        assert location.startswith("/accounts/login/") or location == "/", location
    else:
        assert not location.startswith("/accounts/login/?next"), (key, location)


@pytest.mark.parametrize(("pattern", "key"), ACCOUNT_CASES, ids=[k for _, k in ACCOUNT_CASES])
def test_logged_in_visitor_gets_headers_and_no_error(pattern, key):
    client = Client()
    client.force_login(make_user("carla"))
    response = client.get(_path(key, pattern))
    _headers_ok(response)
    assert response.status_code < 500


POST_CASES = [(pattern, key) for pattern, key in ACCOUNT_CASES if "POST" in ACCOUNT_ROUTES[key][1]]


@pytest.mark.parametrize(("pattern", "key"), POST_CASES, ids=[k for _, k in POST_CASES])
def test_state_changing_post_needs_the_csrf_token(pattern, key):
    client = Client(enforce_csrf_checks=True)
    if ACCOUNT_ROUTES[key][0] == LOGIN:
        client.force_login(make_user("carla"))
    response = client.post(_path(key, pattern), {"login": "carla", "password": "x" * 20})
    assert response.status_code == 403, (key, response.status_code)
    _headers_ok(response)

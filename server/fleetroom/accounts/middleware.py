"""Session limits and the MFA requirement, enforced on every request.

* **Absolute session lifetime** (``FLEETROOM_SESSION_ABSOLUTE_SECONDS``, 12 h by
  default): the idle timeout alone (``SESSION_COOKIE_AGE`` with
  ``SESSION_SAVE_EVERY_REQUEST``) lets a session that is used every few minutes
  live for ever — a stolen cookie too.  The login time is stamped into the
  session at login (:mod:`.receivers`); a session without the stamp, or older
  than the limit, is logged out.
* **MFA required but not set up**: such a user may only reach the pages that set
  up a second factor (and log out); everything else redirects there, or is
  refused for non-GET requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _

from fleetroom.accounts import audit_events, policy
from fleetroom.accounts.receivers import SESSION_AUTHENTICATED_AT


class AbsoluteSessionTimeoutMiddleware:
    """Log out sessions older than the absolute limit, however active they were."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            started = request.session.get(SESSION_AUTHENTICATED_AT)
            limit = settings.FLEETROOM_SESSION_ABSOLUTE_SECONDS
            if not isinstance(started, int | float) or time.time() - started > limit:
                audit_events.record(audit_events.SESSION_EXPIRED, actor=user, target=user,
                                    request=request)
                logout(request)
                messages.info(request, _("Your session has expired. Please sign in again."))
        return self.get_response(request)


MFA_SETUP_URL_NAMES = frozenset({
    "mfa_index", "mfa_activate_totp", "mfa_reauthenticate",
    "mfa_view_recovery_codes", "mfa_download_recovery_codes", "mfa_generate_recovery_codes",
    "mfa_add_webauthn", "mfa_list_webauthn", "mfa_reauthenticate_webauthn",
    "account_reauthenticate", "account_logout", "set_language", "healthz",
})
"""Where a user who still has to set up MFA may go."""


class MfaRequiredMiddleware:
    """Confine users who must use MFA but have not set it up to the MFA setup pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Callable[..., Any],
                     view_args: tuple[Any, ...],
                     view_kwargs: dict[str, Any]) -> HttpResponse | None:
        """Let the request through, or send it to the MFA setup page."""
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if not policy.mfa_required(user) or policy.has_strong_mfa(user):
            return None
        request.fleetroom_mfa_setup_required = True  # type: ignore[attr-defined]
        match = request.resolver_match
        if match is not None and match.url_name in MFA_SETUP_URL_NAMES:
            return None
        if request.path_info.startswith(settings.STATIC_URL or "/static/"):
            return None
        if request.method in ("GET", "HEAD"):
            return HttpResponseRedirect(reverse("mfa_index"))
        return HttpResponseForbidden(_("Set up two-factor authentication first."))

"""Signal receivers that tie Django, allauth and axes events to our policy.

Connected once from :meth:`fleetroom.accounts.apps.AccountsConfig.ready`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC
from typing import Any

from allauth.account import signals as account_signals
from allauth.mfa import signals as mfa_signals
from axes.signals import user_locked_out as axes_user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.http import HttpRequest

from fleetroom.accounts import audit_events, lockout, services, signals
from fleetroom.accounts.models import User

logger = logging.getLogger(__name__)

SESSION_AUTHENTICATED_AT = "fleetroom_authenticated_at"
"""Session key: when this session was logged in (epoch seconds), for the absolute limit."""


def on_user_logged_in(sender: Any, request: HttpRequest, user: User, **kwargs: Any) -> None:
    """Stamp the session for the absolute timeout, index it, audit the login."""
    if request is None:
        return
    request.session[SESSION_AUTHENTICATED_AT] = int(time.time())
    services.index_session(request, user)
    audit_events.record(audit_events.LOGIN_SUCCEEDED, actor=user, target=user, request=request)


def on_user_login_failed(sender: Any, credentials: dict[str, Any],
                         request: HttpRequest | None = None, **kwargs: Any) -> None:
    """Audit every failed attempt under its canonical name (passwords never appear:
    Django masks them before sending, and our own sends carry none)."""
    name = lockout.canonical_username(request, credentials)
    user = get_user_model().objects.filter(username=name).first() if name else None
    audit_events.record(audit_events.LOGIN_FAILED, actor=None, target=user, request=request,
                        data={"username": name or "", "stage": str(credentials.get("stage",
                                                                                   "password"))})


def on_axes_user_locked_out(sender: Any, request: HttpRequest, username: str | None,
                            ip_address: str | None, **kwargs: Any) -> None:
    """axes says a name is locked: record it once per lockout, alert, audit."""
    if username:
        services.record_lockout(request, username=username, ip_address=ip_address)


def on_mfa_authentication_failed(sender: Any, request: HttpRequest, user: User,
                                 **kwargs: Any) -> None:
    """A wrong TOTP or recovery code counts as a failed login for that name."""
    stage = "mfa_reauthenticate" if kwargs.get("reauthentication") else "mfa"
    lockout.record_failure(request, user, stage=stage)


def on_password_changed(sender: Any, request: HttpRequest, user: User, **kwargs: Any) -> None:
    """The user changed (or first set) their password: every other session ends."""
    keep = request.session.session_key if request is not None else None
    services.end_user_sessions(user, reason="password_changed", keep_session_key=keep)
    audit_events.record(audit_events.PASSWORD_CHANGED, actor=user, target=user, request=request)


def on_password_reset(sender: Any, request: HttpRequest, user: User, **kwargs: Any) -> None:
    """A reset by e-mail link: all sessions end, and a lockout is lifted (the new
    password is unknown to whoever caused it; the second factor still applies)."""
    services.end_user_sessions(user, reason="password_reset")
    services.lift_lockouts(user.get_username(), acting_user=None)
    audit_events.record(audit_events.PASSWORD_RESET, actor=user, target=user, request=request)


def _mfa_audit(action: str) -> Any:
    def receiver(sender: Any, request: HttpRequest, user: User, authenticator: Any,
                 **kwargs: Any) -> None:
        audit_events.record(action, actor=user, target=user, request=request,
                            data={"type": str(authenticator.type),
                                  "authenticator_id": int(authenticator.pk or 0)})
    return receiver


on_mfa_added = _mfa_audit(audit_events.MFA_ADDED)
on_mfa_removed = _mfa_audit(audit_events.MFA_REMOVED)
on_mfa_reset = _mfa_audit(audit_events.MFA_RESET)


def on_locked_out_notify_user(sender: Any, username: str, user: User | None,
                              ip_address: str | None, locked_until: Any, number: int,
                              **kwargs: Any) -> None:
    """Tell the account holder their account was locked (someone may be guessing their
    password).  Only real accounts with an address get mail — an unknown name gets
    nothing, so the lockout reveals no more than the login page does.  A mail failure
    is logged, never raised: it must not turn a refused login into a server error."""
    if user is None or not user.email:
        return
    from django.core.mail import send_mail
    from django.utils.translation import gettext

    subject = gettext("Fleetroom: your account was locked")
    body = gettext(
        "Your Fleetroom account %(username)s was locked after too many failed sign-in "
        "attempts (from %(ip)s). It unlocks by itself at %(until)s (UTC); an "
        "administrator can unlock it sooner.\n\nIf this was not you, someone may be "
        "trying to guess your password: change it after signing in, and make sure "
        "two-factor authentication is on.") % {
            "username": username, "ip": ip_address or gettext("an unknown address"),
            "until": locked_until.astimezone(UTC).strftime("%Y-%m-%d %H:%M")}
    try:
        send_mail(subject, body, None, [user.email])
    except Exception:
        logger.exception("could not mail the lockout notice for user %s", user.pk)


def connect() -> None:
    """Connect every receiver (idempotent thanks to ``dispatch_uid``)."""
    user_logged_in.connect(on_user_logged_in, dispatch_uid="fleetroom.accounts.logged_in")
    user_login_failed.connect(on_user_login_failed, dispatch_uid="fleetroom.accounts.failed")
    axes_user_locked_out.connect(on_axes_user_locked_out,
                                 dispatch_uid="fleetroom.accounts.locked_out")
    signals.user_locked_out.connect(on_locked_out_notify_user,
                                    dispatch_uid="fleetroom.accounts.locked_out_mail")
    mfa_signals.authentication_failed.connect(on_mfa_authentication_failed,
                                              dispatch_uid="fleetroom.accounts.mfa_failed")
    for signal in (account_signals.password_changed, account_signals.password_set):
        signal.connect(on_password_changed, dispatch_uid=f"fleetroom.accounts.pw.{id(signal)}")
    account_signals.password_reset.connect(on_password_reset,
                                           dispatch_uid="fleetroom.accounts.pw_reset")
    mfa_signals.authenticator_added.connect(on_mfa_added, dispatch_uid="fleetroom.mfa.added")
    mfa_signals.authenticator_removed.connect(on_mfa_removed,
                                              dispatch_uid="fleetroom.mfa.removed")
    mfa_signals.authenticator_reset.connect(on_mfa_reset, dispatch_uid="fleetroom.mfa.reset")

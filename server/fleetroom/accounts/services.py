"""Writes to accounts: every change goes through a function here.

Views, the API, the CLI and periodic jobs call the same functions, so the audit
event, the session clean-up and the signals other apps rely on are never
forgotten.  ``acting_user=None`` means the system (a periodic job, the CLI).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from allauth.mfa.models import Authenticator
from allauth.usersessions.models import UserSession
from axes.utils import reset as axes_reset
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from fleetroom.accounts import audit_events, lockout, policy, signals
from fleetroom.accounts.models import LockoutEvent, User

logger = logging.getLogger(__name__)

DEACTIVATION_REASON_IDLE = "idle"
"""Stored in ``User.deactivation_reason``; the UI translates the code when it shows it."""


# --- permissions -------------------------------------------------------------------

def _check_may_administer(acting_user: User | None, target: User | None) -> None:
    """Only the system, a superuser (the installation's first administrator, who must
    be able to help before any tenant exists), or whoever a policy hook allows (the
    tenancy app: "could grant all of the target's memberships") may change another
    person's account state."""
    if acting_user is None:
        return
    if acting_user.is_active and acting_user.is_superuser:
        return
    if target is not None and any(check(acting_user, target)
                                  for check in policy.ACCOUNT_ADMIN_CHECKS):
        return
    raise PermissionDenied(_("You may not change this account."))


# --- sessions ----------------------------------------------------------------------

def index_session(request: HttpRequest, user: User) -> None:
    """Remember which session belongs to ``user`` (allauth's usersessions table), so
    :func:`end_user_sessions` can find it.  allauth indexes its own logins; this
    also covers other login paths.  A request without a client address (Django's
    test client's ``force_login``) is skipped: Django's own session-hash and
    ``is_active`` checks still end such sessions on their next request."""
    if not request.session.session_key:
        request.session.save()
    if UserSession.objects.filter(session_key=request.session.session_key).exists():
        return
    if lockout.client_ip(request) is None:
        return
    UserSession.objects.create_from_request(request)


def end_user_sessions(user: User, *, reason: str, keep_session_key: str | None = None) -> int:
    """Delete every session of ``user`` except ``keep_session_key``; returns how many.

    Belt and braces: Django already refuses a session whose password hash no
    longer matches or whose user is inactive, but deleting them means nothing
    is left to steal and the user's session list is truthful at once.
    """
    ended = 0
    for session in UserSession.objects.filter(user_id=user.pk):
        if keep_session_key and session.session_key == keep_session_key:
            continue
        session.end()
        ended += 1
    signals.user_sessions_ended.send(sender=User, user=user, reason=reason,
                                     kept_session_key=keep_session_key)
    logger.info("ended %d session(s) of user %s (%s)", ended, user.pk, reason)
    return ended


def do_set_password(user: User, raw_password: str, *, acting_user: User | None,
                    request: HttpRequest | None = None) -> None:
    """Set a new password for someone (an admin action or the API); validates it
    against the password policy and ends all of that user's sessions."""
    _check_may_administer(acting_user, user)
    if user.pk is not None and user.external_identities.exists():
        # Such a person signs in at their directory or identity provider; a local
        # password would be a second way in that the directory cannot revoke.
        raise ValidationError(_("This account signs in through single sign-on and has no "
                                "local password."), code="sso_account")
    validate_password(raw_password, user)
    with transaction.atomic():
        user.set_password(raw_password)
        user.save(update_fields=["password"])
        end_user_sessions(user, reason="password_set_by_admin")
        audit_events.record(audit_events.PASSWORD_CHANGED, actor=acting_user, target=user,
                            request=request, data={"by_admin": True})


# --- lockout -----------------------------------------------------------------------

def record_lockout(request: HttpRequest | None, *, username: str,
                   ip_address: str | None) -> LockoutEvent | None:
    """Record that ``username`` was just locked; ``None`` when it already was.

    axes reports a locked name on every refused attempt; only the first report of
    a lockout creates an event, alerts (``signals.user_locked_out``, WARNING log)
    and is audited.
    """
    now = getattr(request, "axes_attempt_time", None) or timezone.now()
    with transaction.atomic():
        if LockoutEvent.objects.filter(username=username, lifted_at__isnull=True,
                                       locked_until__gt=now).exists():
            return None
        number = lockout.recent_lockouts(username, now=now) + 1
        until = now + lockout.cool_off_for(username, now=now, lockouts=number)
        user = User.objects.filter(username=username).first()
        event = LockoutEvent.objects.create(username=username, user=user, ip_address=ip_address,
                                            locked_at=now, locked_until=until, number=number)
        audit_events.record(audit_events.LOCKED_OUT, actor=None, target=user, request=request,
                            data={"username": username, "ip_address": ip_address or "",
                                  "locked_until": until.isoformat(), "number": number})
    signals.user_locked_out.send(sender=LockoutEvent, username=username, user=user,
                                 ip_address=ip_address, locked_until=until, number=number,
                                 request=request)
    return event


def lift_lockouts(username: str, *, acting_user: User | None) -> int:
    """Forget the failures and lockouts of a login name (no permission check: callers
    are :func:`do_unlock` and the password-reset receiver).  Returns the number of
    axes attempt rows removed."""
    name = lockout.resolve_login_name(username)
    removed = axes_reset(username=name)
    LockoutEvent.objects.filter(username=name, lifted_at__isnull=True).update(
        lifted_at=timezone.now(), lifted_by=acting_user)
    return int(removed)


def do_unlock(user: User | str, *, acting_user: User | None,
              request: HttpRequest | None = None) -> int:
    """An administrator unlocks an account (or a login name that is no account).

    Clears the failed attempts for the name alone and for every address, and lifts
    its lockouts, so the next lockout starts again from the base cool-off.
    """
    target = user if isinstance(user, User) else User.objects.filter(
        username=lockout.resolve_login_name(user)).first()
    _check_may_administer(acting_user, target)
    name = target.get_username() if target is not None else str(user)
    with transaction.atomic():
        removed = lift_lockouts(name, acting_user=acting_user)
        audit_events.record(audit_events.UNLOCKED, actor=acting_user, target=target,
                            request=request, data={"username": name, "attempts_removed": removed})
    return removed


# --- deactivation ------------------------------------------------------------------

def do_deactivate_user(user: User, *, reason: str, acting_user: User | None,
                       now: datetime | None = None, request: HttpRequest | None = None,
                       data: dict[str, Any] | None = None) -> None:
    """Deactivate an account: it can no longer log in, its sessions end, and
    ``signals.user_deactivated`` tells the API app to revoke its tokens — all in
    one transaction."""
    _check_may_administer(acting_user, user)
    now = now or timezone.now()
    with transaction.atomic():
        user.is_active = False
        user.deactivated_at = now
        user.deactivation_reason = reason[:200]
        user.save(update_fields=["is_active", "deactivated_at", "deactivation_reason"])
        end_user_sessions(user, reason="deactivated")
        signals.user_deactivated.send(sender=User, user=user, reason=reason,
                                      acting_user=acting_user)
        audit_events.record(audit_events.DEACTIVATED, actor=acting_user, target=user,
                            request=request, data={"reason": reason, **(data or {})})


def do_reactivate_user(user: User, *, acting_user: User | None, now: datetime | None = None,
                       request: HttpRequest | None = None) -> None:
    """Re-enable an account; idle time counts afresh from now."""
    _check_may_administer(acting_user, user)
    now = now or timezone.now()
    with transaction.atomic():
        previous = user.deactivation_reason
        user.is_active = True
        user.deactivated_at = None
        user.deactivation_reason = ""
        user.reactivated_at = now
        user.save(update_fields=["is_active", "deactivated_at", "deactivation_reason",
                                 "reactivated_at"])
        audit_events.record(audit_events.REACTIVATED, actor=acting_user, target=user,
                            request=request, data={"previous_reason": previous})


def last_seen(user: User) -> datetime:
    """The latest of last login, reactivation and joining: what idle time counts from."""
    return max(d for d in (user.last_login, user.reactivated_at, user.date_joined) if d)


def deactivate_idle_users(now: datetime | None = None) -> list[int]:
    """Deactivate every active user idle for longer than their limit; returns their ids.

    Users who never logged in count from ``date_joined``.  With no per-user limit
    hooks registered the database does the filtering; with hooks every active user
    is asked (fine for a daily job at the scale of people, not devices).
    """
    now = now or timezone.now()
    candidates = User.objects.filter(is_active=True).order_by("pk")
    if not policy.IDLE_LIMITS:
        threshold = now - policy.default_idle_limit()
        candidates = candidates.alias(seen=Coalesce("last_login", "date_joined")).filter(
            Q(seen__lt=threshold) & (Q(reactivated_at__isnull=True)
                                     | Q(reactivated_at__lt=threshold)))
    deactivated: list[int] = []
    for user in candidates.iterator():
        limit = policy.idle_limit(user)
        idle = now - last_seen(user)
        if idle < limit:
            continue
        try:
            do_deactivate_user(user, reason=DEACTIVATION_REASON_IDLE, acting_user=None,
                               now=now, data={"idle_days": idle.days, "limit_days": limit.days})
        except Exception:
            # One account whose clean-up fails (say, token revocation) is rolled back
            # and retried tomorrow; it must not keep every other idle account active.
            logger.exception("could not deactivate idle user %s", user.pk)
            continue
        deactivated.append(user.pk)
    return deactivated


# --- API tokens --------------------------------------------------------------------

class ApiAuthenticationFailed(Exception):
    """Token issuance refused.  ``code`` is for the API's error body:

    * ``invalid_credentials`` — wrong name/password/code, unknown or locked name
      (deliberately one code for all of them);
    * ``mfa_code_required`` — password right, a TOTP or recovery code is needed;
    * ``mfa_setup_required`` — this user must set up MFA in the web UI first;
    * ``mfa_method_unsupported`` — only security keys are set up, which the token
      endpoint cannot use; create the token in the web UI.
    """

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def authenticate_for_api_token(request: HttpRequest, *, login: str, password: str,
                               code: str | None = None) -> User:
    """Check everything the web login checks, for issuing an API token.

    The same lockout (a wrong password or code counts, a locked name is refused as
    ``invalid_credentials``), the same MFA rule (a user with MFA must give a code;
    a user who must have MFA but has none gets nothing).  The caller creates the
    token only when this returns.
    """
    authenticated = authenticate(request, username=login, password=password)
    if not isinstance(authenticated, User):
        raise ApiAuthenticationFailed("invalid_credentials")
    user = authenticated
    code_authenticators = list(Authenticator.objects.filter(user_id=user.pk).exclude(
        type=Authenticator.Type.WEBAUTHN))
    if policy.has_strong_mfa(user):
        if not code_authenticators:
            raise ApiAuthenticationFailed("mfa_method_unsupported")
        if not code:
            raise ApiAuthenticationFailed("mfa_code_required")
        if lockout.is_locked(request, user.get_username()):
            raise ApiAuthenticationFailed("invalid_credentials")
        # The TOTP first, then the recovery codes (a code is checked against both,
        # as the login form does).
        for auth in sorted(code_authenticators, key=lambda a: a.type != "totp"):
            if auth.wrap().validate_code(code):
                auth.record_usage()
                break
        else:
            lockout.record_failure(request, user, stage="api_token")
            raise ApiAuthenticationFailed("invalid_credentials")
    elif policy.mfa_required(user):
        raise ApiAuthenticationFailed("mfa_setup_required")
    audit_events.record(audit_events.API_TOKEN_AUTHENTICATED, actor=user, target=user,
                        request=request, data={"mfa": policy.has_strong_mfa(user)})
    return user


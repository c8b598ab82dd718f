"""Every write of the API app: issuing, revoking and using tokens (architecture rule 4).

The token endpoint, the token web page and the accounts signals all call these
functions, so the audit row, the limits and the checks are never forgotten.

Why a token is checked against so much on every request (:func:`authenticate`):
a token must never be a way around what the web login enforces.  It stops working
when it is revoked or expired, when its user is inactive or deactivated, when the
user's password changed after it was issued (also through paths that send no
signal, like ``manage changepassword``), and while the user is required to have a
second factor but has none (the web confines such a user to the MFA setup pages).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _

from fleetroom.accounts import policy
from fleetroom.accounts.models import User
from fleetroom.core import audit
from fleetroom.core.scoping import SYSTEM, SystemActor

from . import audit_events, conf, tokens
from .models import ApiToken, RevokeReason, TokenSource

logger = logging.getLogger(__name__)

_FINGERPRINT_SALT = "fleetroom.api.token.password"
NAME_MAX = 100


class TokenRequestInvalid(ValueError):
    """A token cannot be issued as asked (bad name or lifetime); ``message`` says why."""

    def __init__(self, message: Any) -> None:
        super().__init__(str(message))
        self.message = message


class TokenLimitReached(TokenRequestInvalid):
    """The user already holds the maximum number of live tokens."""


class TokenRejected(Exception):
    """A presented token does not authenticate.  ``code`` is for the 401 body:

    ``invalid`` (not a token, unknown, wrong secret), ``expired``, ``revoked``,
    ``inactive`` (user deactivated) or ``mfa_setup_required``.  Only ``invalid`` is
    given before the secret has been verified, so the codes reveal nothing to
    someone who does not hold the token.
    """

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token and its secret string, which exists only in this object."""

    token: ApiToken
    secret: str
    """The full token (``frt_…``); show it once, then let it go."""


# --- helpers -------------------------------------------------------------------------

def _fingerprint(password_hash: str, key: str) -> str:
    return salted_hmac(_FINGERPRINT_SALT, password_hash or "", secret=key,
                       algorithm="sha256").hexdigest()


def password_fingerprint(user: User) -> str:
    """What :attr:`ApiToken.password_fingerprint` stores for ``user`` now."""
    return _fingerprint(user.password, settings.SECRET_KEY)


def _fingerprint_matches(user: User, stored: str) -> bool:
    ok = False
    for key in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]:
        ok |= hmac.compare_digest(_fingerprint(user.password, key), stored)
    return ok


def _user_is_live(user: User) -> bool:
    return bool(user.is_active and user.deactivated_at is None)


def clean_name(name: str | None) -> str:
    """A token's name, trimmed; refuses empty, over-long or control-character names."""
    # ASCII whitespace only, exactly what the API schema's pattern treats as blank.
    value = (name or "").strip(" \t\n\r\x0b\x0c")
    if not value:
        raise TokenRequestInvalid(_("Give the token a name, so you can recognise it later."))
    if len(value) > NAME_MAX:
        raise TokenRequestInvalid(_("The name may be at most %(max)d characters long.")
                                  % {"max": NAME_MAX})
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise TokenRequestInvalid(_("The name may not contain control characters."))
    return value


def clean_days(days: int | None) -> int:
    """The lifetime in days: the default when none is given, refused beyond the maximum."""
    if days is None:
        return conf.token_default_days()
    maximum = conf.token_max_days()
    if not 1 <= days <= maximum:
        raise TokenRequestInvalid(_("A token lives between 1 and %(max)d days.")
                                  % {"max": maximum})
    return days


def live_tokens(user: User) -> QuerySet[ApiToken]:
    """The user's tokens that are neither revoked nor expired."""
    return ApiToken.objects.filter(user_id=user.pk, revoked_at__isnull=True,
                                   expires_at__gt=timezone.now())


def _record(action: str, user: User | None, actor: Any, data: dict[str, Any],
            request: HttpRequest | None, token: ApiToken | None = None) -> None:
    audit.record(action, tenant=None, actor=actor,
                 target=token if token is not None else user, data=data, request=request)


# --- issue and revoke -------------------------------------------------------------------

def do_issue_token(user: User, *, name: str | None, days: int | None, created_via: TokenSource,
                   request: HttpRequest | None = None) -> IssuedToken:
    """Create a token for ``user`` (who has just proven who they are) and audit it.

    The caller has authenticated the user: the token endpoint through
    :func:`fleetroom.accounts.services.authenticate_for_api_token` (password,
    lockout, MFA), the web page through the logged-in, recently re-authenticated
    session.  A person only ever issues tokens for themselves.
    """
    if not _user_is_live(user):
        raise PermissionDenied(_("This account is deactivated."))
    clean = clean_name(name)
    lifetime = clean_days(days)
    with transaction.atomic():
        # Lock the user's row so two concurrent requests cannot both pass the limit.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if live_tokens(user).count() >= conf.max_tokens_per_user():
            raise TokenLimitReached(
                _("You already have %(max)d active tokens. Revoke one you no longer need "
                  "first.") % {"max": conf.max_tokens_per_user()})
        now = timezone.now()
        for _attempt in range(3):
            key_id, secret = tokens.new_token()
            try:
                with transaction.atomic():
                    token = ApiToken.objects.create(
                        user=user, name=clean, key_id=key_id,
                        secret_hash=tokens.hash_secret(key_id, secret),
                        password_fingerprint=password_fingerprint(user),
                        created_via=created_via, expires_at=now + timedelta(days=lifetime))
                break
            except IntegrityError:  # a key id collision: 62^12 makes this a cosmic ray
                continue
        else:  # pragma: no cover - three collisions in a row
            raise RuntimeError("could not allocate a unique token key id")
        _record(audit_events.TOKEN_ISSUED, user, user,
                {"token_id": token.pk, "key_id": token.key_id, "name": token.name,
                 "expires_at": token.expires_at.isoformat(), "created_via": str(created_via)},
                request, token)
    logger.info("API token %s issued to user %s via %s", token.key_id, user.pk, created_via)
    return IssuedToken(token=token, secret=tokens.display(key_id, secret))


def record_issue_failure(request: HttpRequest | None, *, login: str, code: str) -> None:
    """Audit a refused token request (the failed password itself is audited by accounts)."""
    with transaction.atomic():
        _record(audit_events.TOKEN_ISSUE_FAILED, None, None,
                {"login": login.strip()[:150], "code": code}, request)


def _revoke(token: ApiToken, *, reason: RevokeReason, actor: Any,
            request: HttpRequest | None) -> bool:
    """Mark one token revoked (only if it is not already) and audit it."""
    now = timezone.now()
    changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=now, revoked_reason=reason)
    if not changed:
        return False
    token.revoked_at, token.revoked_reason = now, reason
    _record(audit_events.TOKEN_REVOKED, None, actor,
            {"token_id": token.pk, "key_id": token.key_id, "reason": str(reason)},
            request, token)
    return True


def do_revoke_token(token: ApiToken, *, acting_user: User | SystemActor,
                    reason: RevokeReason = RevokeReason.OWNER,
                    request: HttpRequest | None = None) -> bool:
    """Revoke one token; ``True`` if it was live until now (revoking twice is harmless).

    Only the token's owner (or the system) may: tokens are personal, and an
    administrator who wants someone's tokens gone deactivates the account, which
    revokes them all.
    """
    if acting_user is not SYSTEM and getattr(acting_user, "pk", None) != token.user_id:
        raise PermissionDenied(_("You may only revoke your own tokens."))
    actor: Any = acting_user
    with transaction.atomic():
        return _revoke(token, reason=reason, actor=actor, request=request)


def revoke_all_tokens(user: User, *, reason: RevokeReason,
                      request: HttpRequest | None = None) -> int:
    """Revoke every token of ``user`` that is not revoked yet; returns how many.

    Called by the accounts signals on deactivation and password change.  Runs in
    the caller's transaction when there is one (deactivation sends its signal
    inside its own, so a failure here rolls the deactivation back instead of
    leaving a deactivated user with working tokens).
    """
    count = 0
    with transaction.atomic():
        for token in ApiToken.objects.select_for_update().filter(user_id=user.pk,
                                                                 revoked_at__isnull=True):
            count += _revoke(token, reason=reason, actor=SYSTEM, request=request)
    if count:
        logger.info("revoked %d API token(s) of user %s (%s)", count, user.pk, reason)
    return count


# --- use ------------------------------------------------------------------------------

def authenticate(raw: str, *, request: HttpRequest | None = None) -> ApiToken:
    """The live token ``raw`` names, with its user loaded; raises :class:`TokenRejected`.

    Also notes when and from where the token was last used (at most once per
    :func:`conf.last_used_resolution_seconds`).
    """
    parsed = tokens.parse(raw)
    if parsed is None:
        raise TokenRejected("invalid")
    key_id, secret = parsed
    token = ApiToken.objects.select_related("user").filter(key_id=key_id).first()
    if token is None:
        tokens.hash_secret(key_id, secret)  # same work as a wrong secret: no timing oracle
        raise TokenRejected("invalid")
    if not tokens.check_secret(key_id, secret, token.secret_hash):
        raise TokenRejected("invalid")
    user = token.user
    if token.revoked_at is not None:
        raise TokenRejected("revoked")
    now = timezone.now()
    if token.expires_at <= now:
        raise TokenRejected("expired")
    if not _user_is_live(user):
        raise TokenRejected("inactive")
    if not _fingerprint_matches(user, token.password_fingerprint):
        revoke_all_tokens(user, reason=RevokeReason.PASSWORD_CHANGED, request=request)
        raise TokenRejected("revoked")
    if policy.mfa_required(user) and not policy.has_strong_mfa(user):
        raise TokenRejected("mfa_setup_required")
    _touch(token, now, request)
    return token


def _touch(token: ApiToken, now: datetime, request: HttpRequest | None) -> None:
    """Record use, without turning every read into a write."""
    resolution = timedelta(seconds=conf.last_used_resolution_seconds())
    ip = audit.client_ip(request)
    if (token.last_used_at is not None and now - token.last_used_at < resolution
            and token.last_used_ip == ip):
        return
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=ip)
    token.last_used_at, token.last_used_ip = now, ip

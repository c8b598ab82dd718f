"""Account-security policy decisions, and the hooks other apps plug into them.

Other apps know things this app does not (which roles a user holds, which
company they work for), so each decision is a small function consulting a list
of registered callables.  Register from your ``AppConfig.ready()``::

    from fleetroom.accounts import policy
    policy.register_mfa_required_check(holds_dealer_or_operator_role)
    policy.register_context_word_provider(lambda user: [company_name_of(user)])
    policy.register_idle_limit(lambda user: timedelta(days=30) if is_dealer(user) else None)
    policy.register_account_admin_check(lambda actor, target: manages_users_of(actor, target))

Every hook is called with saved users and must not write anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from fleetroom.accounts.models import User

MfaCheck = Callable[["User"], bool]
ContextWordProvider = Callable[["User"], Iterable[str]]
IdleLimit = Callable[["User"], timedelta | None]
AdminCheck = Callable[["User", "User"], bool]


def _is_django_staff(user: User) -> bool:
    """Django's own privileged flags: the platform's operators until tenancy roles exist."""
    return bool(user.is_superuser or user.is_staff)


MFA_REQUIRED_CHECKS: list[MfaCheck] = [_is_django_staff]
"""A user must use MFA when any check returns True.  The tenancy app adds the
"holds an operator or dealer role" check; ``FLEETROOM_MFA_REQUIRED_FOR_ALL``
(settings) makes it everyone."""

CONTEXT_WORD_PROVIDERS: list[ContextWordProvider] = []
"""Extra words a user's password must not contain (e.g. the company name)."""

IDLE_LIMITS: list[IdleLimit] = []
"""Per-user idle limits before deactivation; the shortest answer wins, ``None``
means "no opinion", and with no opinion at all the configured default applies."""

ACCOUNT_ADMIN_CHECKS: list[AdminCheck] = []
"""``(acting_user, target) -> bool``: may the acting user unlock, deactivate or
reactivate the target?  Superusers and the system always may; the tenancy app
adds "could grant every membership the target holds"."""


def register_mfa_required_check(check: MfaCheck) -> None:
    """Add a reason why a user must use MFA (idempotent)."""
    if check not in MFA_REQUIRED_CHECKS:
        MFA_REQUIRED_CHECKS.append(check)


def register_context_word_provider(provider: ContextWordProvider) -> None:
    """Add a source of words a user's password must not contain (idempotent)."""
    if provider not in CONTEXT_WORD_PROVIDERS:
        CONTEXT_WORD_PROVIDERS.append(provider)


def register_idle_limit(limit: IdleLimit) -> None:
    """Add a per-user idle limit (e.g. per role); idempotent."""
    if limit not in IDLE_LIMITS:
        IDLE_LIMITS.append(limit)


def mfa_required(user: User) -> bool:
    """True when this user may not use the product without a second factor.

    Anonymous and unsaved users never "require" MFA: there is nothing to protect
    yet, and the login flow asks again once the user is known.
    """
    if not getattr(user, "is_authenticated", False) or user.pk is None:
        return False
    if getattr(settings, "FLEETROOM_MFA_REQUIRED_FOR_ALL", False):
        return True
    return any(check(user) for check in MFA_REQUIRED_CHECKS)


def has_strong_mfa(user: User) -> bool:
    """True when the user has an authenticator that can be used at login (TOTP or a
    security key/passkey); recovery codes alone do not count, they back the others up."""
    from allauth.mfa.models import Authenticator
    from allauth.mfa.utils import is_mfa_enabled

    return bool(is_mfa_enabled(user, [Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN]))


def context_words(user: User | None) -> list[str]:
    """Words that make a password guessable for this account: the service name, the
    username, the parts of the e-mail address, the names, and what hooks add."""
    words: list[str] = ["fleetroom"]
    if user is None:
        return words
    words.append(user.get_username() or "")
    email = user.email or ""
    local, _, domain = email.partition("@")
    words.extend([local, domain, *domain.split(".")[:-1]])
    words.extend([user.first_name or "", user.last_name or ""])
    if user.pk is not None:
        for provider in CONTEXT_WORD_PROVIDERS:
            words.extend(provider(user))
    return words


def register_account_admin_check(check: AdminCheck) -> None:
    """Add a rule letting someone administer another person's account (idempotent)."""
    if check not in ACCOUNT_ADMIN_CHECKS:
        ACCOUNT_ADMIN_CHECKS.append(check)


def default_idle_limit() -> timedelta:
    """``[security] deactivate_after_days`` (90 by default)."""
    return timedelta(days=settings.CONFIG.security.deactivate_after_days)


def idle_limit(user: User) -> timedelta:
    """How long this user may stay away before the account is deactivated."""
    answers = [a for a in (limit(user) for limit in IDLE_LIMITS) if a is not None]
    return min(answers) if answers else default_idle_limit()

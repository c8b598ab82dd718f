"""allauth adapters and form overrides: where Fleetroom's policy meets allauth.

* No self-signup: accounts are created by administrators or access codes.
* MFA secrets are encrypted at rest (:mod:`.secretbox`).
* A user who must use MFA cannot deactivate their last TOTP while it is their only
  real second factor.  (allauth 65 does not ask the adapter before a security key
  is removed; removing the last one sends the user straight back to MFA setup,
  see :class:`.middleware.MfaRequiredMiddleware`.)
* Second-factor codes are refused while the login name is locked out, and a
  wrong code counts as a failed login (the counting itself is in :mod:`.receivers`).
"""

from __future__ import annotations

import logging
import smtplib
from typing import TYPE_CHECKING, Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context as allauth_context
from allauth.mfa.adapter import DefaultMFAAdapter, get_adapter
from allauth.mfa.base.forms import AuthenticateForm, ReauthenticateForm
from allauth.mfa.models import Authenticator
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from fleetroom.accounts import lockout, policy, secretbox
from fleetroom.core import audit

if TYPE_CHECKING:
    from fleetroom.accounts.models import User

logger = logging.getLogger(__name__)


class AccountAdapter(DefaultAccountAdapter):  # type: ignore[misc]
    """Account adapter: signup closed, security notifications best-effort."""

    def get_client_ip(self, request: HttpRequest) -> str:
        """The one client-address policy of the project (``core.audit.client_ip``), so
        allauth's rate limits, axes' lockout and the audit log see the same address."""
        ip = audit.client_ip(request)
        if ip is None:
            raise PermissionDenied("no client address")
        return ip

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        """Nobody signs themselves up; the signup URL shows "closed" and creates nothing."""
        return False

    def send_notification_mail(self, template_prefix: str, user: User,
                               context: dict[str, Any] | None = None,
                               email: str | None = None) -> None:
        """Tell the user about a security change ("your password was changed").

        The change itself has already been committed when allauth sends this, so a
        mail server that is down must not turn it into an error page; it is logged
        instead.  (Password-reset mails are sent elsewhere and still fail loudly:
        without the mail the user cannot continue.)
        """
        try:
            super().send_notification_mail(template_prefix, user, context, email)
        except (OSError, smtplib.SMTPException):
            logger.exception("could not send security notification %s to user %s",
                             template_prefix, user.pk)

    # --- SSO (fleetroom/accounts/sso): no local password for SSO accounts ----------------

    def set_password(self, user: User, password: str) -> None:
        """Refuse to give an account that signs in through SSO a local password (the
        forms say so first; this catches every other path through allauth)."""
        from fleetroom.accounts.sso.services import is_sso_managed

        if is_sso_managed(user):
            raise PermissionDenied("this account signs in through SSO")
        super().set_password(user, password)

    def send_password_reset_mail(self, user: User, email: str, context: dict[str, Any]) -> None:
        """No reset link for an account that signs in through SSO (its password is
        the organisation's); the form still answers as if one was sent."""
        from fleetroom.accounts.sso.services import is_sso_managed

        if is_sso_managed(user):
            logger.info("no password reset mail for SSO user %s", user.pk)
            return
        super().send_password_reset_mail(user, email, context)


class MFAAdapter(DefaultMFAAdapter):  # type: ignore[misc]
    """MFA adapter: encrypted secrets, and MFA cannot be switched off where required."""

    def encrypt(self, text: str) -> str:
        """Encrypt a TOTP secret or recovery seed before it is stored."""
        return secretbox.encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        """Decrypt what :meth:`encrypt` stored (refuses unencrypted values)."""
        return secretbox.decrypt(encrypted_text)

    def can_delete_authenticator(self, authenticator: Authenticator) -> bool:
        """Refuse removing the last TOTP/security key of a user who must use MFA
        (consulted by allauth when TOTP is deactivated).

        Recovery codes are only a backup and may always be regenerated or removed
        together with the last real factor by allauth's own clean-up.
        """
        user: User = authenticator.user
        if authenticator.type == Authenticator.Type.RECOVERY_CODES:
            return True
        if not policy.mfa_required(user):
            return True
        others = (Authenticator.objects.filter(user_id=user.pk)
                  .filter(type__in=[Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN])
                  .exclude(pk=authenticator.pk))
        return bool(others.exists())


class _LockoutAwareCodeForm:
    """Mixin for allauth's code forms: a locked name gets "incorrect code" without a check."""

    user: User
    abandon_login_when_locked = False

    def clean_code(self) -> str:
        """Refuse while locked (same message as a wrong code); otherwise allauth checks."""
        request: HttpRequest = allauth_context.request
        if lockout.is_locked(request, self.user.get_username()):
            if self.abandon_login_when_locked:
                lockout.abandon_pending_login(request)
            raise get_adapter().validation_error("incorrect_code")
        code: str = super().clean_code()  # type: ignore[misc]
        return code


class LockoutAwareAuthenticateForm(_LockoutAwareCodeForm, AuthenticateForm):  # type: ignore[misc]
    """The second step of login (TOTP or recovery code)."""

    abandon_login_when_locked = True


class LockoutAwareReauthenticateForm(_LockoutAwareCodeForm, ReauthenticateForm):  # type: ignore[misc]
    """Re-authentication with a code before sensitive changes."""

"""OpenID Connect login through allauth: who may come in, and as whom.

allauth runs the protocol — discovery, the authorization-code flow with PKCE and
``state``, the token request, the ID token's issuer/audience/expiry checks, the
userinfo request — and then asks this adapter.  Our rules:

* Only providers from ``[[sso.oidc]]`` may sign anyone in or up; signup stays
  closed for everything else (:class:`~fleetroom.accounts.adapters.AccountAdapter`).
* The e-mail domain must be allowed, and — unless the provider is configured not
  to send it — verified (``email_verified``).
* A returning person (same provider and ``sub``) is that user again, whatever
  their address is today; their name and address are refreshed.
* A new person gets a new user with ``default_role`` on the provider's tenant;
  an existing account with the same address is linked only when configured and
  the address is verified, otherwise refused.
* A locked-out login name is refused here as well, and allauth's MFA stage runs
  after this, so a user with TOTP or a security key must still give it.
* Linking or unlinking provider accounts by users themselves is off: identities
  are the directory's and the administrator's business.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import requests
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.providers.base import AuthProcess
from allauth.socialaccount.providers.openid_connect.provider import (
    OpenIDConnectProvider as AllauthOpenIDConnectProvider,
)
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from fleetroom.accounts import lockout
from fleetroom.accounts.models import User
from fleetroom.accounts.sso import services

if TYPE_CHECKING:
    from allauth.socialaccount.models import SocialLogin

    from fleetroom.config import OidcProviderConfig

logger = logging.getLogger(__name__)

REFUSED_TEMPLATE = "socialaccount/sso_refused.html"


def refused_response(request: HttpRequest, exc: services.SsoRefused) -> ImmediateHttpResponse:
    """The page a refused SSO login ends on (HTTP 403), wrapped for allauth to return."""
    response = render(request, REFUSED_TEMPLATE, {"message": exc.message}, status=403)
    return ImmediateHttpResponse(response)


class OpenIDConnectProvider(AllauthOpenIDConnectProvider):  # type: ignore[misc]
    """allauth's OpenID Connect provider, answering "not possible right now" (503)
    instead of a server error when the provider cannot be reached to start a login
    (allauth fetches the discovery document there without catching failures; the
    callback already handles them).  Set as ``provider_class`` in
    ``SOCIALACCOUNT_PROVIDERS`` (:mod:`.conf`)."""

    package = "allauth.socialaccount.providers.openid_connect"
    """Where allauth finds the URLs and views: allauth's own, unchanged."""

    def redirect(self, request: HttpRequest, process: Any, next_url: str | None = None,
                 data: Any = None, **kwargs: Any) -> HttpResponse:
        """Start the login at the provider, or explain why it cannot start."""
        try:
            response: HttpResponse = super().redirect(request, process, next_url, data,
                                                      **kwargs)
        except (requests.RequestException, ValueError) as exc:
            logger.warning("OIDC provider %s cannot be reached: %s: %s",
                           self.app.provider_id, type(exc).__name__, exc)
            return render(request, REFUSED_TEMPLATE,
                          {"message": services.SsoRefused("unavailable").message}, status=503)
        return response


class SocialAccountAdapter(DefaultSocialAccountAdapter):  # type: ignore[misc]
    """allauth's social-account adapter with the rules in the module docstring."""

    def _refuse(self, request: HttpRequest, sociallogin: SocialLogin, reason: str,
                detail: str = "", user: User | None = None) -> ImmediateHttpResponse:
        exc = services.SsoRefused(reason, detail, user=user)
        services.audit_refusal(exc, provider=str(sociallogin.account.provider),
                               subject=str(sociallogin.account.uid), request=request)
        logger.warning("OIDC login via %s refused: %s %s", sociallogin.account.provider,
                       reason, detail)
        return refused_response(request, exc)

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        """Decide whether this provider login may go on (raises to stop it)."""
        provider = services.oidc_provider(str(sociallogin.account.provider))
        if provider is None:
            raise self._refuse(request, sociallogin, "unknown_provider")
        if sociallogin.state.get("process") == AuthProcess.CONNECT:
            raise self._refuse(request, sociallogin, "connect_not_allowed")
        claims = services.oidc_claims(sociallogin.account.extra_data or {})
        email = claims.get("email") if isinstance(claims.get("email"), str) else ""
        if sociallogin.is_existing:
            self._returning(request, sociallogin, provider, claims)
            return
        verified = services.email_verified(claims)
        if not email or (provider.require_email_verified and not verified):
            raise self._refuse(request, sociallogin, "no_email",
                               "no e-mail address" if not email else "address not verified")
        if not services.email_domain_allowed(email, provider.allowed_email_domains):
            raise self._refuse(request, sociallogin, "email_domain", email.rpartition("@")[2])
        existing = User.objects.filter(email__iexact=email).first()
        if existing is not None:
            self._link(request, sociallogin, provider, existing, verified=verified)
            return
        if services.resolve_tenant(provider.tenant) is None:
            raise self._refuse(request, sociallogin, "unavailable",
                               f"tenant {provider.tenant!r} not found")

    def _returning(self, request: HttpRequest, sociallogin: SocialLogin,
                   provider: OidcProviderConfig, claims: dict[str, Any]) -> None:
        user: User = sociallogin.user
        if lockout.is_locked(request, user.get_username()):
            raise self._refuse(request, sociallogin, "unavailable", "login name locked", user)
        email = claims.get("email")
        if isinstance(email, str) and email and not services.email_domain_allowed(
                email, provider.allowed_email_domains):
            raise self._refuse(request, sociallogin, "email_domain",
                               email.rpartition("@")[2], user)
        services.oidc_returning_login(user, provider=provider,
                                      social_account=sociallogin.account, claims=claims,
                                      request=request)

    def _link(self, request: HttpRequest, sociallogin: SocialLogin,
              provider: OidcProviderConfig, existing: User, *, verified: bool) -> None:
        """An account with this address exists: link it only when configured, the
        address is verified, and the account has no identity at this provider yet."""
        if not (provider.link_existing_by_email and verified) or \
                existing.external_identities.filter(provider=provider.id).exists():
            raise self._refuse(request, sociallogin, "account_exists",
                               f"address belongs to user {existing.pk}", existing)
        if lockout.is_locked(request, existing.get_username()):
            raise self._refuse(request, sociallogin, "unavailable", "login name locked",
                               existing)
        sociallogin.connect(request, existing)
        services.oidc_linked(existing, provider=provider, social_account=sociallogin.account,
                             request=request)

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        """Open only for the configured providers (whose logins passed
        :meth:`pre_social_login`); closed for anything else."""
        return services.oidc_provider(str(sociallogin.account.provider)) is not None

    def is_auto_signup_allowed(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        """Never show a signup form: the provider's data is all there is."""
        return True

    def save_user(self, request: HttpRequest, sociallogin: SocialLogin,
                  form: Any = None) -> User:
        """Create the user (unusable password, by allauth), then its identity and the
        provider's membership."""
        provider = services.oidc_provider(str(sociallogin.account.provider))
        if provider is None:  # pre_social_login refused this already
            raise refused_response(request, services.SsoRefused("unknown_provider"))
        user: User = super().save_user(request, sociallogin, form)
        services.oidc_user_created(user, provider=provider, social_account=sociallogin.account,
                                   request=request)
        return user

    def validate_disconnect(self, account: Any, accounts: Any) -> None:
        """Users may not unlink their organisation's sign-in (it is their only one)."""
        raise ValidationError(_("Your organisation's sign-in cannot be removed here."))

    def on_authentication_error(self, request: HttpRequest, provider: Any, error: Any = None,
                                exception: Any = None, extra_context: Any = None) -> None:
        """Log why a provider login failed (a wrong issuer, an expired token, …): the
        person only sees "login failed", the operator needs the reason."""
        app = getattr(provider, "app", None)
        name = getattr(app, "provider_id", None) or getattr(provider, "id", provider)
        logger.warning("OIDC login via %s failed: %s %s", name, error,
                       f"{type(exception).__name__}: {exception}" if exception else "")

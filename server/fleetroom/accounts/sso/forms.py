"""Password forms that refuse accounts signing in through SSO.

Such an account has no usable local password on purpose: the directory or the
provider is the only way in, so disabling someone there disables them here.
allauth would still offer "set a password" (it does so for every account
without one) and a reset by e-mail; these forms say why not instead.  The
adapter (:meth:`fleetroom.accounts.adapters.AccountAdapter.set_password`) refuses
as well, for any other path that tries.
"""

from __future__ import annotations

from typing import Any

from allauth.account.forms import ResetPasswordKeyForm, SetPasswordForm
from django import forms
from django.utils.translation import gettext_lazy as _

from fleetroom.accounts.sso.services import is_sso_managed

SSO_PASSWORD_MESSAGE = _("You sign in through your organisation, so this account has no "
                         "password here. Change your password with your organisation.")


class _RefuseSsoMixin:
    user: Any

    def clean(self) -> dict[str, Any]:
        """Refuse before anything is set."""
        if is_sso_managed(self.user):
            raise forms.ValidationError(SSO_PASSWORD_MESSAGE, code="sso_managed")
        cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        return cleaned


class SsoAwareSetPasswordForm(_RefuseSsoMixin, SetPasswordForm):  # type: ignore[misc]
    """allauth's "set password" form, refused for SSO accounts."""


class SsoAwareResetPasswordKeyForm(_RefuseSsoMixin, ResetPasswordKeyForm):  # type: ignore[misc]
    """allauth's "new password from reset link" form, refused for SSO accounts."""

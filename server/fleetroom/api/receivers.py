"""Revoke a user's tokens when the accounts app says the person's credentials changed.

Connected once from :meth:`fleetroom.api.apps.ApiConfig.ready` to the signals
:mod:`fleetroom.accounts.signals` sends (that app never imports this one):

* ``user_deactivated`` — every token goes, inside the deactivation's transaction;
* ``user_sessions_ended`` with a password reason — a new password must log out
  every client that knew the old one, tokens included (a token issued with a
  stolen password must not survive the victim's password change).

Other reasons for ending sessions (none today) leave tokens alone: a token is not a
session, and its owner revokes it on the token page.
"""

from __future__ import annotations

from typing import Any

from fleetroom.accounts import signals
from fleetroom.accounts.models import User

from . import services
from .models import RevokeReason

PASSWORD_REASONS: dict[str, RevokeReason] = {
    "password_changed": RevokeReason.PASSWORD_CHANGED,
    "password_set_by_admin": RevokeReason.PASSWORD_CHANGED,
    "password_reset": RevokeReason.PASSWORD_RESET,
}
"""``user_sessions_ended`` reasons (see :mod:`fleetroom.accounts.services`) that revoke tokens."""


def on_user_deactivated(sender: Any, user: User, **kwargs: Any) -> None:
    """The account is deactivated: none of its tokens may work again."""
    services.revoke_all_tokens(user, reason=RevokeReason.DEACTIVATED)


def on_user_sessions_ended(sender: Any, user: User, reason: str = "", **kwargs: Any) -> None:
    """The password changed (or was reset, or set by an administrator): revoke all tokens."""
    revoke_reason = PASSWORD_REASONS.get(reason)
    if revoke_reason is not None:
        services.revoke_all_tokens(user, reason=revoke_reason)


def connect() -> None:
    """Connect the receivers (idempotent thanks to ``dispatch_uid``)."""
    signals.user_deactivated.connect(on_user_deactivated,
                                     dispatch_uid="fleetroom.api.user_deactivated")
    signals.user_sessions_ended.connect(on_user_sessions_ended,
                                        dispatch_uid="fleetroom.api.user_sessions_ended")

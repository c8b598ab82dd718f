"""Audit events of the accounts app, in one place.

Every event goes to the ``fleetroom.accounts.audit`` logger (so operators see
lockouts and deactivations in the server log even before they open the UI) and,
when the project's audit log :func:`fleetroom.core.audit.record` is installed, into
that hash-chained table as well, inside the caller's transaction.  Account events
belong to a person rather than to one tenant, so they go to the platform chain
(``tenant=None``).  The action names below are dotted and lower-case, as
core.audit requires.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from django.db import models
from django.http import HttpRequest

logger = logging.getLogger("fleetroom.accounts.audit")

LOGIN_SUCCEEDED = "accounts.login_succeeded"
LOGIN_FAILED = "accounts.login_failed"
LOCKED_OUT = "accounts.locked_out"
UNLOCKED = "accounts.unlocked"
DEACTIVATED = "accounts.deactivated"
REACTIVATED = "accounts.reactivated"
PASSWORD_CHANGED = "accounts.password_changed"  # noqa: S105 - an event name
PASSWORD_RESET = "accounts.password_reset"  # noqa: S105 - an event name
MFA_ADDED = "accounts.mfa_added"
MFA_REMOVED = "accounts.mfa_removed"
MFA_RESET = "accounts.mfa_reset"
API_TOKEN_AUTHENTICATED = "accounts.api_token_authenticated"  # noqa: S105
SESSION_EXPIRED = "accounts.session_expired"
# SSO (fleetroom/accounts/sso)
SSO_USER_CREATED = "accounts.sso_user_created"
SSO_IDENTITY_LINKED = "accounts.sso_identity_linked"
SSO_USER_UPDATED = "accounts.sso_user_updated"
SSO_LOGIN_REFUSED = "accounts.sso_login_refused"
SSO_IDENTITY_GONE = "accounts.sso_identity_gone"

ALL_ACTIONS = (LOGIN_SUCCEEDED, LOGIN_FAILED, LOCKED_OUT, UNLOCKED, DEACTIVATED, REACTIVATED,
               PASSWORD_CHANGED, PASSWORD_RESET, MFA_ADDED, MFA_REMOVED, MFA_RESET,
               API_TOKEN_AUTHENTICATED, SESSION_EXPIRED,
               SSO_USER_CREATED, SSO_IDENTITY_LINKED, SSO_USER_UPDATED, SSO_LOGIN_REFUSED,
               SSO_IDENTITY_GONE)

_WARNING_ACTIONS = frozenset({LOCKED_OUT, DEACTIVATED, SSO_LOGIN_REFUSED, SSO_IDENTITY_GONE})
"""Logged at WARNING so log-based alerting picks them up without configuration."""


@cache
def _core_record() -> Callable[..., Any] | None:
    """``fleetroom.core.audit.record`` when that module exists, else ``None``.

    Looked up once; an import error *inside* an existing module is not hidden.
    """
    if importlib.util.find_spec("fleetroom.core.audit") is None:
        return None
    module = importlib.import_module("fleetroom.core.audit")
    record_fn: Callable[..., Any] | None = getattr(module, "record", None)
    return record_fn


def record(action: str, *, actor: Any, target: models.Model | None = None,
           data: Mapping[str, Any] | None = None, request: HttpRequest | None = None) -> None:
    """Write one account event to the audit log (when installed) and the log."""
    payload = dict(data or {})
    core = _core_record()
    if core is not None:
        core(action, tenant=None, actor=actor, target=target, data=payload, request=request)
    level = logging.WARNING if action in _WARNING_ACTIONS else logging.INFO
    target_label = f"{target._meta.label_lower}:{target.pk}" if target is not None else "-"
    actor_label = (actor.get_username() if getattr(actor, "is_authenticated", False)
                   else "-")
    logger.log(level, "%s actor=%s target=%s data=%s", action, actor_label, target_label,
               payload, extra={"audit_action": action, "audit_data": payload})

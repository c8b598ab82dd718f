"""The audit events the API app writes, each with a typed ``data`` model.

Tokens belong to a person rather than to one tenant, so their events go to the
platform chain (``tenant=None``), beside the accounts app's login events.  Only
key ids ever appear in audit data — never a secret, never a password.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fleetroom.core.audit import register_action

TOKEN_ISSUED = "api.token_issued"  # noqa: S105 - an event name
TOKEN_REVOKED = "api.token_revoked"  # noqa: S105 - an event name
TOKEN_ISSUE_FAILED = "api.token_issue_failed"  # noqa: S105 - an event name


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenIssued(_Data):
    """api.token_issued"""

    token_id: int
    key_id: str
    name: str
    expires_at: str
    created_via: str


class TokenRevoked(_Data):
    """api.token_revoked"""

    token_id: int
    key_id: str
    reason: str


class TokenIssueFailed(_Data):
    """api.token_issue_failed: the login name as typed (trimmed) and the refusal code."""

    login: str
    code: str


AUDIT_ACTIONS: dict[str, type[BaseModel]] = {
    TOKEN_ISSUED: TokenIssued,
    TOKEN_REVOKED: TokenRevoked,
    TOKEN_ISSUE_FAILED: TokenIssueFailed,
}


def register() -> None:
    """Declare the data models (called from ``ApiConfig.ready``)."""
    for action, schema in AUDIT_ACTIONS.items():
        register_action(action, schema)

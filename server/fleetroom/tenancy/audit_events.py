"""The audit events tenancy writes, each with a typed ``data`` model.

Registered with :func:`fleetroom.core.audit.register_action` in
``TenancyConfig.ready()``.  Times are ISO strings and ids integers, because
audit data must survive a ``jsonb`` round trip byte-for-byte (no floats).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fleetroom.core.audit import register_action


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantCreated(_Data):
    """tenant.created"""

    kind: str
    name: str
    parent_id: int | None
    path: str


class TenantRenamed(_Data):
    """tenant.renamed"""

    old_name: str
    new_name: str


class TenantMoved(_Data):
    """tenant.moved"""

    old_parent_id: int
    new_parent_id: int
    old_path: str
    new_path: str
    subtree_size: int


class TenantActivation(_Data):
    """tenant.deactivated / tenant.reactivated"""

    path: str
    reason: str = ""


class MembershipData(_Data):
    """membership.granted / membership.revoked: the membership as it is (was)."""

    membership_id: int
    user_id: int
    tenant_id: int
    role: str
    custom_role_id: int | None
    permissions: list[str]
    site_restricted: bool
    site_ids: list[int]
    expires_at: str | None
    via_access_code_id: int | None


class MembershipChanged(_Data):
    """membership.changed"""

    before: MembershipData
    after: MembershipData


class RoleData(_Data):
    """role.created / role.changed"""

    role_id: int
    name: str
    permissions: list[str]
    old_name: str | None = None
    old_permissions: list[str] | None = None


class AccessCodeCreated(_Data):
    """access_code.created (never the secret)"""

    lookup_id: str
    label: str
    permissions: list[str]
    site_restricted: bool
    site_ids: list[int]
    expires_at: str
    max_uses: int
    membership_expires_at: str | None


class AccessCodeRedeemed(_Data):
    """access_code.redeemed"""

    lookup_id: str
    membership_id: int
    use_count: int


class AccessCodeFailed(_Data):
    """access_code.failed: the reason is for administrators; the user sees one message."""

    reason: str
    lookup_id: str | None = None


class AccessCodeLockedOut(_Data):
    """access_code.locked_out"""

    keys: list[str]


class AccessCodeRevoked(_Data):
    """access_code.revoked"""

    lookup_id: str
    memberships_revoked: int


class UserCreated(_Data):
    """user.created: an administrator created an account (it has no password yet)."""

    user_id: int
    username: str
    email: str


class PasswordLinkIssued(_Data):
    """user.password_link_issued: a one-time set-password link was shown to an admin."""

    user_id: int
    had_password: bool


class AccessCodeUnlocked(_Data):
    """access_code.unlocked: an administrator lifted a user's redemption lockout."""

    user_id: int
    keys: list[str]


ACTIONS: dict[str, type[BaseModel]] = {
    "tenant.created": TenantCreated,
    "tenant.renamed": TenantRenamed,
    "tenant.moved": TenantMoved,
    "tenant.deactivated": TenantActivation,
    "tenant.reactivated": TenantActivation,
    "membership.granted": MembershipData,
    "membership.changed": MembershipChanged,
    "membership.revoked": MembershipData,
    "role.created": RoleData,
    "role.changed": RoleData,
    "access_code.created": AccessCodeCreated,
    "access_code.redeemed": AccessCodeRedeemed,
    "access_code.failed": AccessCodeFailed,
    "access_code.locked_out": AccessCodeLockedOut,
    "access_code.revoked": AccessCodeRevoked,
    "access_code.unlocked": AccessCodeUnlocked,
    "user.created": UserCreated,
    "user.password_link_issued": PasswordLinkIssued,
}


def register() -> None:
    """Register every tenancy action (idempotent)."""
    for action, schema in ACTIONS.items():
        register_action(action, schema)

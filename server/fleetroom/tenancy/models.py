"""The tenant tree: platform operator → dealer → customer → site (→ locations).

Subtree queries must work the same on SQLite and PostgreSQL, so the tree is a
materialised path: every node stores its ancestors' ids as ``/1/5/9/``.  "All of
dealer 5's tenants" is then ``path LIKE '/1/5/%'`` — one prefix match on both
databases (an index range scan on PostgreSQL; on SQLite a scan of this small
table), no recursive CTE, no PostgreSQL-only ltree.

Beside the tree live the things that decide who sees which part of it:
memberships (user × tenant × permissions, optionally restricted to sites),
dealers' custom roles, access codes, and the failure counters that lock out
code guessing.  All of them are written only through :mod:`.services`, and read
through :mod:`fleetroom.core.scoping`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from fleetroom.core.scoping import TENANT_SELF, ScopedManager
from fleetroom.tenancy.permissions import BuiltinRole, normalise_permissions


class TenantKind(models.TextChoices):
    """The levels of the tree, top to bottom."""

    OPERATOR = "operator", _("Platform operator")
    DEALER = "dealer", _("Dealer")
    CUSTOMER = "customer", _("Customer")
    SITE = "site", _("Site")
    LOCATION = "location", _("Location")


ALLOWED_PARENT: dict[str, str | None] = {
    TenantKind.OPERATOR: None,
    TenantKind.DEALER: TenantKind.OPERATOR,
    TenantKind.CUSTOMER: TenantKind.DEALER,
    TenantKind.SITE: TenantKind.CUSTOMER,
    TenantKind.LOCATION: TenantKind.SITE,
}
"""Which kind each kind hangs under; a location may also hang under a location."""


class Tenant(models.Model):
    """One node of the tree.  Create and move nodes only through tenancy.services."""

    kind = models.CharField(_("kind"), max_length=16, choices=TenantKind.choices)
    name = models.CharField(_("name"), max_length=200)
    parent = models.ForeignKey("self", verbose_name=_("parent"), null=True, blank=True,
                               on_delete=models.PROTECT, related_name="children")
    path = models.CharField(_("path"), max_length=255, db_index=True, editable=False)
    """Ancestor ids and own id, ``/1/5/9/``; maintained by the services."""
    depth = models.PositiveSmallIntegerField(_("depth"), default=0, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    """This node's own switch, set by do_deactivate / do_reactivate."""
    active_in_tree = models.BooleanField(_("active in tree"), default=True, editable=False)
    """This node and every ancestor are active; what scoping checks (maintained by services)."""
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    tenant_field: ClassVar[str] = TENANT_SELF
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("tenant")
        verbose_name_plural = _("tenants")
        ordering = ("path",)
        constraints = [
            models.UniqueConstraint(fields=["parent", "name"], name="tenant_unique_name_in_parent"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name}"

    def is_within(self, other: Tenant) -> bool:
        """True when this node is ``other`` or lies below it."""
        return self.path.startswith(other.path)

    @property
    def ancestor_ids(self) -> list[int]:
        """Ids from the root down to the parent, read from the path (no query)."""
        return [int(p) for p in self.path.strip("/").split("/")[:-1] if p]

    @property
    def root_id(self) -> int:
        """The id of this tree's root (the first path segment)."""
        return int(self.path.strip("/").split("/")[0])


class PermissionListField(models.JSONField):
    """A JSON list of :class:`~fleetroom.tenancy.permissions.Permission` values.

    Validated and normalised (sorted, unique) on every save, so an unknown or
    misspelt permission can never be stored (architecture rule 10: typed JSON).
    """

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        """Normalise before writing; raises ``ValueError`` on an unknown permission."""
        value = getattr(model_instance, self.attname)
        if value is None:
            value = []
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError("permissions must be a list")
        value = normalise_permissions(str(v) for v in value)
        setattr(model_instance, self.attname, value)
        return value


class Role(models.Model):
    """A dealer's (or customer's) own named permission set, beside the built-in roles.

    Usable by memberships on the role's tenant and below.  Never broader than what
    its creator held when creating or changing it (checked in the services).
    """

    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="custom_roles")
    name = models.CharField(_("name"), max_length=100)
    permissions = PermissionListField(_("permissions"), default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("role")
        verbose_name_plural = _("roles")
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="role_unique_name_in_tenant"),
        ]

    def __str__(self) -> str:
        return self.name


class AccessCode(models.Model):
    """A one-time (or few-times) code that grants a restricted membership when redeemed.

    The code is shown once.  Stored are a random, non-secret ``lookup_id`` (the
    first characters of the code, indexed) and an HMAC-SHA256 of the secret part
    keyed from ``SECRET_KEY`` — see :mod:`fleetroom.tenancy.access_codes`.
    """

    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="access_codes")
    lookup_id = models.CharField(_("code id"), max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(_("secret hash"), max_length=64, editable=False)
    label = models.CharField(_("label"), max_length=200, blank=True)
    permissions = PermissionListField(_("permissions"), default=list)
    site_restricted = models.BooleanField(_("restricted to sites"), default=False)
    sites = models.ManyToManyField(Tenant, verbose_name=_("sites"), blank=True,
                                   related_name="access_code_sites+")
    expires_at = models.DateTimeField(_("expires at"))
    max_uses = models.PositiveIntegerField(_("maximum uses"), default=1)
    use_count = models.PositiveIntegerField(_("times used"), default=0)
    membership_expires_at = models.DateTimeField(_("access expires at"), null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("revoked by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("access code")
        verbose_name_plural = _("access codes")
        constraints = [
            models.CheckConstraint(condition=Q(max_uses__gte=1), name="access_code_max_uses_min_1"),
            models.CheckConstraint(condition=Q(use_count__lte=models.F("max_uses")),
                                   name="access_code_use_count_lte_max"),
        ]

    def __str__(self) -> str:
        return f"{self.lookup_id} ({self.tenant_id})"


class Membership(models.Model):
    """User × tenant × permissions: the only thing that lets anyone see tenant data.

    Permissions come from exactly one of: a built-in ``role``, a ``custom_role``,
    or the explicit ``permissions`` list (used by access codes).  They hold on the
    tenant's whole subtree, or — when ``site_restricted`` — only on the listed
    ``sites`` that lie inside it (an empty list then means nothing, never all).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"),
                             on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="memberships")
    role = models.CharField(_("role"), max_length=32, choices=BuiltinRole.choices, blank=True)
    custom_role = models.ForeignKey(Role, verbose_name=_("custom role"), null=True, blank=True,
                                    on_delete=models.PROTECT, related_name="memberships")
    permissions = PermissionListField(_("permissions"), default=list, blank=True)
    site_restricted = models.BooleanField(_("restricted to sites"), default=False)
    sites = models.ManyToManyField(Tenant, verbose_name=_("sites"), blank=True,
                                   related_name="membership_sites+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    via_access_code = models.ForeignKey(AccessCode, verbose_name=_("access code"), null=True,
                                        blank=True, on_delete=models.PROTECT,
                                        related_name="memberships")

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [
            models.CheckConstraint(condition=Q(role="") | Q(custom_role__isnull=True),
                                   name="membership_one_role_source"),
            models.UniqueConstraint(fields=["user", "tenant"],
                                    condition=Q(via_access_code__isnull=True),
                                    name="membership_unique_direct"),
            models.UniqueConstraint(fields=["user", "via_access_code"],
                                    condition=Q(via_access_code__isnull=False),
                                    name="membership_unique_per_code"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} @ {self.tenant_id}"


class LockoutCounter(models.Model):
    """Failed attempts of one kind by one user or one address; see :mod:`.lockout`.

    Kept in the database (not a process-local cache) so every web worker sees the
    same counts and a restart does not reset them.
    """

    key = models.CharField(_("key"), max_length=120, unique=True)
    """``<purpose>:user:<id>`` or ``<purpose>:ip:<address or /64 network>``."""
    failures = models.PositiveIntegerField(_("failures"), default=0)
    first_failure_at = models.DateTimeField(_("first failure at"), null=True, blank=True)
    last_failure_at = models.DateTimeField(_("last failure at"), null=True, blank=True)
    locked_until = models.DateTimeField(_("locked until"), null=True, blank=True)

    class Meta:
        verbose_name = _("lockout counter")
        verbose_name_plural = _("lockout counters")

    def __str__(self) -> str:
        return self.key

"""The tenant tree: platform operator → dealer → customer → site (→ locations).

Subtree queries must work the same on SQLite and PostgreSQL, so the tree is a
materialised path: every node stores its ancestors' ids as ``/1/5/9/``.  "All of
dealer 5's tenants" is then ``path LIKE '/1/5/%'`` — one indexed prefix scan on
both databases, no recursive CTE, no PostgreSQL-only ltree.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


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
    path = models.CharField(max_length=255, db_index=True, editable=False)
    """Ancestor ids and own id, ``/1/5/9/``; maintained by the services."""
    depth = models.PositiveSmallIntegerField(default=0, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

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

"""The audit log: append-only, hash-chained per tenant.  Written only by :mod:`.audit`.

Each tenant has its own chain (platform-wide events without a tenant share the
``platform`` chain); a row's ``hash`` covers its own fields and the previous
row's hash, and :class:`AuditChainHead` remembers the last ``seq`` and hash of
every chain, so an edited, deleted, inserted or reordered row — or a truncated
tail — shows up in :func:`fleetroom.core.audit.verify_chain`.

The ORM refuses to change rows (``save`` of an existing row, ``delete``, queryset
``update``/``delete``/``bulk_*``).  That stops accidents and application bugs;
someone with direct database access can still write, which is what the chain
is for: tampering is detected, not prevented.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn, Self, TypeVar

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from fleetroom.core.scoping import ScopedManagerBase, ScopedQuerySet

_E = TypeVar("_E", bound=models.Model)

GENESIS_HASH = "0" * 64
PLATFORM_CHAIN = "platform"


class AppendOnlyError(Exception):
    """Raised on any attempt to change or delete an audit row through the ORM."""


def _refuse(*_: Any, **__: Any) -> NoReturn:
    raise AppendOnlyError("the audit log is append-only; write through fleetroom.core.audit")


class AuditEventQuerySet(ScopedQuerySet[_E]):
    """Scoped, and refusing every bulk write."""

    def update(self, **kwargs: Any) -> int:
        """Refused: audit rows never change."""
        _refuse()

    def delete(self) -> tuple[int, dict[str, int]]:
        """Refused: audit rows are never deleted."""
        _refuse()

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        """Refused: audit rows never change."""
        _refuse()

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[_E]:
        """Refused: rows must go through ``audit.record`` to join the chain."""
        _refuse()

    def update_or_create(self, *args: Any, **kwargs: Any) -> tuple[_E, bool]:
        """Refused: audit rows never change."""
        _refuse()


AuditEventManager = ScopedManagerBase.from_queryset(AuditEventQuerySet, "AuditEventManager")
"""``AuditEvent.objects.for_user(user, Permission.VIEW_AUDIT)``; refuses bulk writes."""


class AuditEvent(models.Model):
    """One thing that happened: who did what to which object, in which tenant, from where."""

    chain = models.CharField(_("chain"), max_length=40, editable=False)
    """``platform`` or ``tenant:<id>``."""
    seq = models.PositiveBigIntegerField(_("sequence number"), editable=False)
    tenant = models.ForeignKey("tenancy.Tenant", verbose_name=_("tenant"), null=True,
                               blank=True, on_delete=models.PROTECT, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("actor"), null=True,
                              blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
                              related_name="+")
    """Kept as a bare id (no constraint) so deleting a user never rewrites hashed rows."""
    actor_label = models.CharField(_("actor name"), max_length=150, blank=True)
    action = models.CharField(_("action"), max_length=100, db_index=True)
    target_type = models.CharField(_("object type"), max_length=100, blank=True)
    target_id = models.CharField(_("object id"), max_length=64, blank=True)
    data = models.JSONField(_("details"), default=dict)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    created_at = models.DateTimeField(_("time"))
    prev_hash = models.CharField(_("previous hash"), max_length=64, editable=False)
    hash = models.CharField(_("hash"), max_length=64, editable=False)

    tenant_field: ClassVar[str] = "tenant"
    scope_platform_rows: ClassVar[bool] = True
    objects: ClassVar[AuditEventManager[Self]] = AuditEventManager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(fields=["chain", "seq"], name="audit_unique_chain_seq"),
        ]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="audit_tenant_time"),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Insert once, from ``audit.record`` only; never update."""
        if not self._state.adding or not getattr(self, "_via_record", False):
            _refuse()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Refused."""
        _refuse()


class AuditChainHead(models.Model):
    """The last ``seq`` and hash of one chain; locked to append, compared when verifying."""

    key = models.CharField(_("chain"), max_length=40, unique=True)
    seq = models.PositiveBigIntegerField(_("sequence number"), default=0)
    last_hash = models.CharField(_("last hash"), max_length=64, default=GENESIS_HASH)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("audit chain head")
        verbose_name_plural = _("audit chain heads")

    def __str__(self) -> str:
        return f"{self.key}@{self.seq}"

"""The one fail-closed choke point for reading tenant data.

Every view, API endpoint, export and background task that reads tenant data goes
through :func:`restrict` (or its spellings ``Model.objects.for_user(...)`` and
:func:`get_object_or_404_scoped`).  The rules, borrowed from NetBox's
``RestrictedQuerySet.restrict(user, action)`` and deliberately *unlike* Tactical
RMM's "an empty list means everything":

* A user sees an object when one of their memberships grants the permission on
  a tenant node that is the object's tenant or one of its ancestors (a membership
  on a dealer covers all its customers, sites and locations).  A membership
  restricted to some sites covers only those sites' subtrees — never the rest of
  the tenant, and nothing at all if the listed sites are gone.
* No membership means **nothing**.  So do an anonymous or inactive (or
  deactivated) user, an expired membership, and a deactivated tenant (or a
  tenant below a deactivated one).
* ``is_superuser`` is **not** a bypass.  Django's flag only governs the Django
  admin; platform staff see tenant data through an ``operator_admin`` membership
  on the operator node like everybody else, so every access is explained by a
  membership row and an audit event.
* Out-of-scope objects are indistinguishable from missing ones: 404, never 403.
* A model opts in by naming the lookup path to its tenant in a class attribute
  ``tenant_field`` (``"tenant"``, ``"site"``, ``"agent__site"``; ``""`` for the
  Tenant model itself).  A model without it cannot be scoped at all
  (:class:`~django.core.exceptions.ImproperlyConfigured`), so forgetting it fails
  loudly instead of leaking.

Declaring a model::

    class Device(models.Model):
        tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.PROTECT)
        tenant_field: ClassVar[str] = "tenant"
        objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    Device.objects.for_user(request.user, Permission.VIEW_FLEET).filter(...)
    get_object_or_404_scoped(Device, request.user, Permission.EDIT_DEVICES, pk=pk)

(``ClassVar[ScopedManager[Self]]`` is the spelling django-stubs accepts; a
concrete model name there makes mypy infer ``ScopedManager[Self]`` and complain.)

Efficiency: a user's memberships are read once (two queries: memberships with
their tenants and roles, then restricted sites) and cached on the user object —
``request.user`` lives for one request, so this is the per-request cache Django's
own ``ModelBackend`` uses for ``_perm_cache``.  The cache expires on its own when
the earliest membership expires.  A scope is then a handful of tenant path
prefixes, and restricting a queryset adds one sub-select,
``tenant_id IN (SELECT id FROM tenant WHERE path LIKE '/1/5/%' OR ...)``.  The big
table is then reached through its ``tenant_id`` index; the prefix match itself is
an index range scan on PostgreSQL (Django's ``varchar_pattern_ops`` index on
``path``) and a scan of the small tenant table on SQLite, whose ``LIKE`` cannot
use a binary-collated index — both checked with EXPLAIN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist, PermissionDenied
from django.db import models
from django.db.models import Q
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from fleetroom.tenancy.permissions import ROLE_PERMISSIONS, BuiltinRole, Permission, as_permissions

if TYPE_CHECKING:
    from fleetroom.tenancy.models import Membership, Tenant

_M = TypeVar("_M", bound=models.Model)

CACHE_ATTR = "_fleetroom_scope_cache"
TENANT_SELF = ""
"""``tenant_field`` value for a model that *is* a tenant node (the Tenant model)."""


class SystemActor:
    """The acting user of work no person started: the CLI, migrations, data imports.

    Services take ``acting_user: User | SystemActor``; only :data:`SYSTEM` skips
    their permission checks.  It is a distinct object rather than ``None`` so that
    a view that forgot to pass the request's user fails type checking instead of
    silently running with full rights.  Audit rows record it as "no actor".
    """

    _instance: ClassVar[SystemActor | None] = None

    def __new__(cls) -> Self:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "SYSTEM"


SYSTEM = SystemActor()


@dataclass(frozen=True, slots=True)
class Grant:
    """What one live membership allows: some permissions on some subtrees."""

    prefixes: tuple[str, ...]
    permissions: frozenset[Permission]
    platform: bool
    """Unrestricted membership on an operator root: may also see platform-wide rows."""


@dataclass(frozen=True, slots=True)
class _Resolved:
    grants: tuple[Grant, ...]
    valid_until: datetime | None


_NOTHING = _Resolved(grants=(), valid_until=None)


def minimise_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Drop every prefix that lies below another one ('/1/5/9/' under '/1/5/')."""
    out: list[str] = []
    for p in sorted(set(prefixes)):
        if not any(p.startswith(kept) for kept in out):
            out.append(p)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ScopeFilter:
    """The tenants on which a user holds one permission, as minimal path prefixes."""

    permission: Permission
    prefixes: tuple[str, ...]
    platform: bool = False

    @property
    def is_empty(self) -> bool:
        """True when the user holds the permission nowhere."""
        return not self.prefixes

    def tenant_q(self, relation: str = "", *, include_inactive: bool = False) -> Q:
        """A ``Q`` on Tenant fields (``relation`` is the lookup prefix, e.g. ``"site__"``).

        An empty scope yields a condition that matches nothing, never an empty ``Q()``
        (which would match everything).
        """
        if self.is_empty:
            return Q(**{f"{relation}pk__in": []})
        q = Q()
        for p in self.prefixes:
            q |= Q(**{f"{relation}path__startswith": p})
        if not include_inactive:
            q &= Q(**{f"{relation}active_in_tree": True})
        return q

    def tenants(self, *, include_inactive: bool = False) -> models.QuerySet[Tenant]:
        """The tenant nodes in scope (also usable as a sub-select)."""
        from fleetroom.tenancy.models import Tenant

        if self.is_empty:
            return Tenant.objects.none()
        return Tenant.objects.filter(self.tenant_q(include_inactive=include_inactive))

    def covers(self, tenant: Tenant) -> bool:
        """True when ``tenant`` (as loaded) is active and inside the scope."""
        return tenant.active_in_tree and any(tenant.path.startswith(p) for p in self.prefixes)


def _user_is_live(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "deactivated_at", None) is None
        and getattr(user, "pk", None) is not None
    )


def membership_permissions(m: Membership) -> frozenset[Permission]:
    """A membership's permissions: its built-in role, its custom role, or its explicit set.

    A custom role only counts while the membership's tenant lies inside the role's
    owner tenant (a move can take it outside), which fails closed.
    """
    if m.role:
        try:
            return ROLE_PERMISSIONS[BuiltinRole(m.role)]
        except ValueError:
            return frozenset()
    if m.custom_role_id is not None:
        role = m.custom_role
        if role is None or not m.tenant.path.startswith(role.tenant.path):
            return frozenset()
        return as_permissions(role.permissions)
    return as_permissions(m.permissions)


def membership_prefixes(m: Membership, sites: Iterable[Tenant]) -> tuple[str, ...]:
    """The subtrees a membership covers: its tenant, or only its listed sites inside it."""
    if not m.site_restricted:
        return (m.tenant.path,)
    return minimise_prefixes(s.path for s in sites if s.path.startswith(m.tenant.path))


def _resolve(user: Any) -> _Resolved:
    if not _user_is_live(user):
        return _NOTHING
    now = timezone.now()
    cached: _Resolved | None = getattr(user, CACHE_ATTR, None)
    if cached is not None and (cached.valid_until is None or cached.valid_until > now):
        return cached

    from fleetroom.tenancy.models import Membership, Tenant

    memberships = list(
        Membership.objects.filter(user_id=user.pk, tenant__active_in_tree=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .select_related("tenant", "custom_role__tenant")
        .prefetch_related(models.Prefetch(
            "sites", queryset=Tenant.objects.only("id", "path", "active_in_tree")))
    )
    grants: list[Grant] = []
    valid_until: datetime | None = None
    for m in memberships:
        if m.expires_at is not None and (valid_until is None or m.expires_at < valid_until):
            valid_until = m.expires_at
        perms = membership_permissions(m)
        prefixes = membership_prefixes(m, m.sites.all())
        if not perms or not prefixes:
            continue
        platform = (not m.site_restricted and m.tenant.parent_id is None
                    and m.tenant.kind == "operator")
        grants.append(Grant(prefixes=prefixes, permissions=perms, platform=platform))
    resolved = _Resolved(grants=tuple(grants), valid_until=valid_until)
    setattr(user, CACHE_ATTR, resolved)
    return resolved


def clear_scope_cache(user: Any) -> None:
    """Forget the cached memberships of this user object (services call it on change)."""
    if user is not None and hasattr(user, CACHE_ATTR):
        delattr(user, CACHE_ATTR)


def scope(user: Any, permission: Permission | str) -> ScopeFilter:
    """Where ``user`` holds ``permission``; empty for anyone without a live membership."""
    perm = Permission(permission)
    grants = [g for g in _resolve(user).grants if perm in g.permissions]
    return ScopeFilter(
        permission=perm,
        prefixes=minimise_prefixes(p for g in grants for p in g.prefixes),
        platform=any(g.platform for g in grants),
    )


def permissions_on(user: Any, tenant: Tenant) -> frozenset[Permission]:
    """Every permission ``user`` holds on ``tenant`` (through it or an ancestor)."""
    if not tenant.active_in_tree:
        return frozenset()
    out: set[Permission] = set()
    for g in _resolve(user).grants:
        if any(tenant.path.startswith(p) for p in g.prefixes):
            out |= g.permissions
    return frozenset(out)


def has_permission(user: Any, permission: Permission | str, tenant: Tenant) -> bool:
    """True when ``user`` holds ``permission`` on ``tenant``."""
    return scope(user, permission).covers(tenant)


def require_permission(actor: Any, permission: Permission | str, tenant: Tenant) -> None:
    """For services: :data:`SYSTEM` passes; a user must hold ``permission`` on ``tenant``.

    Raises :class:`~django.core.exceptions.PermissionDenied` (403).  A service is
    only reached with an object the caller could already load through the scope,
    so a 403 here reveals nothing that a 404 would hide.
    """
    if actor is SYSTEM:
        return
    if not has_permission(actor, permission, tenant):
        raise PermissionDenied(_("You do not have permission to do this."))


def tenant_field_of(model: type[models.Model]) -> str:
    """The model's declared lookup path to its tenant; refuses models that declare none."""
    field = getattr(model, "tenant_field", None)
    if not isinstance(field, str):
        raise ImproperlyConfigured(
            f"{model._meta.label} has no 'tenant_field'; it cannot be read through the "
            "tenant scope (declare e.g. tenant_field = 'site')")
    return field


def restrict(qs: models.QuerySet[_M], user: Any, permission: Permission | str, *,
             include_inactive: bool = False) -> models.QuerySet[_M]:
    """``qs`` narrowed to the rows ``user`` may see with ``permission``.

    ``include_inactive`` keeps deactivated tenants' rows (for the screens that
    reactivate them); memberships on deactivated tenants still grant nothing.
    Models with ``scope_platform_rows = True`` (the audit log) also show rows
    without a tenant to holders of an unrestricted operator-root membership.
    """
    model = qs.model
    field = tenant_field_of(model)
    f = scope(user, permission)
    if f.is_empty:
        return qs.none()
    if field == TENANT_SELF:
        return qs.filter(f.tenant_q(include_inactive=include_inactive))
    cond = Q(**{f"{field}__in": f.tenants(include_inactive=include_inactive).values("pk")})
    if f.platform and getattr(model, "scope_platform_rows", False):
        cond |= Q(**{f"{field}__isnull": True})
    return qs.filter(cond)


def get_object_or_404_scoped(qs_or_model: type[_M] | models.QuerySet[_M], user: Any,
                             permission: Permission | str, **lookup: Any) -> _M:
    """The one object matching ``lookup`` inside the user's scope, else :class:`Http404`.

    Missing and out-of-scope look the same on purpose (no existence oracle).
    """
    if isinstance(qs_or_model, models.QuerySet):
        qs = qs_or_model
    else:
        qs = qs_or_model._default_manager.all()
    try:
        return restrict(qs, user, permission).get(**lookup)
    except ObjectDoesNotExist:
        raise Http404(_("Not found.")) from None


class ScopedQuerySet(models.QuerySet[_M, _M]):
    """A queryset with ``.for_user(user, permission)``, the scoped spelling of ``restrict``."""

    def for_user(self, user: Any, permission: Permission | str, *,
                 include_inactive: bool = False) -> Self:
        """Rows ``user`` may see with ``permission`` (see :func:`restrict`)."""
        return restrict(self, user, permission, include_inactive=include_inactive)  # type: ignore[return-value]


class ScopedManagerBase(models.Manager[_M]):
    """See :data:`ScopedManager`."""


ScopedManager = ScopedManagerBase.from_queryset(ScopedQuerySet, "ScopedManager")
"""Default manager for tenant data: ``Model.objects.for_user(user, permission)``, and every
queryset it returns has ``for_user`` too."""

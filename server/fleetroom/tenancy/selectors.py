"""Reads of the tenant tree and memberships.

:func:`subtree`, :func:`ancestors` and :func:`children` are *structural* reads:
they do not check who is asking, so they are for services, tasks and for
narrowing a queryset that was already scoped.  Anything shown to a user goes
through :func:`visible_tenants` (or ``Tenant.objects.for_user``), which is scoped.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from fleetroom.core.scoping import restrict
from fleetroom.tenancy.models import Membership, Tenant
from fleetroom.tenancy.permissions import Permission


def subtree(tenant: Tenant, *, include_self: bool = True,
            include_inactive: bool = False) -> QuerySet[Tenant]:
    """``tenant`` and everything below it, in path order: one prefix scan."""
    qs = Tenant.objects.filter(path__startswith=tenant.path)
    if not include_self:
        qs = qs.exclude(pk=tenant.pk)
    if not include_inactive:
        qs = qs.filter(active_in_tree=True)
    return qs.order_by("depth", "path")


def ancestors(tenant: Tenant, *, include_self: bool = False) -> QuerySet[Tenant]:
    """The nodes above ``tenant``, root first; the ids come from the path (no recursion)."""
    ids = tenant.ancestor_ids + ([tenant.pk] if include_self else [])
    return Tenant.objects.filter(pk__in=ids).order_by("depth")


def children(tenant: Tenant, *, include_inactive: bool = False) -> QuerySet[Tenant]:
    """The direct children of ``tenant``, by name."""
    qs = Tenant.objects.filter(parent=tenant)
    if not include_inactive:
        qs = qs.filter(is_active=True)
    return qs.order_by("name")


def visible_tenants(user: Any, permission: Permission | str = Permission.VIEW_FLEET, *,
                    include_inactive: bool = False) -> QuerySet[Tenant]:
    """The tenant nodes ``user`` holds ``permission`` on (scoped)."""
    return restrict(Tenant.objects.all(), user, permission, include_inactive=include_inactive)


def live_memberships(user: Any) -> QuerySet[Membership]:
    """The user's own unexpired memberships on live tenants ("my accounts" screen)."""
    now = timezone.now()
    if getattr(user, "pk", None) is None:
        return Membership.objects.none()
    return (Membership.objects.filter(user_id=user.pk, tenant__active_in_tree=True)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .select_related("tenant", "custom_role").order_by("tenant__path"))

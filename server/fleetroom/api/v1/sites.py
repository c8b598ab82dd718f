"""The tenant tree as far as the caller may see it (permission: ``view_fleet``).

"Sites" in the URL because that is what customers call them; the list holds every
visible node — dealers, customers, sites and locations — so a client can rebuild
the part of the tree it has access to.  A node's parent is only named when the
caller may see the parent too: ids above one's own access are not handed out.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Path, Query, Router

from fleetroom.accounts.models import User
from fleetroom.core.scoping import get_object_or_404_scoped
from fleetroom.tenancy.models import Tenant
from fleetroom.tenancy.permissions import Permission

from ..pagination import paginate
from ..schemas import Id, PageParams, SiteFilters, SiteOut, SitePage
from .common import ERRORS, acting_user

router = Router(tags=["sites"])
VIEW = Permission.VIEW_FLEET


def _visible_parents(user: User, nodes: list[Tenant]) -> set[int]:
    parent_ids = {t.parent_id for t in nodes if t.parent_id is not None}
    if not parent_ids:
        return set()
    return set(Tenant.objects.for_user(user, VIEW).filter(pk__in=parent_ids)
               .values_list("pk", flat=True))


def _site_out(t: Tenant, visible_parents: set[int]) -> SiteOut:
    parent = t.parent_id if t.parent_id in visible_parents else None
    return SiteOut(id=t.pk, kind=t.kind, name=t.name,  # type: ignore[arg-type]
                   parent_id=parent, depth=t.depth)


@router.get("/sites", response={200: SitePage, **ERRORS}, operation_id="listSites",
            summary="Tenant nodes you may see")
def list_sites(request: HttpRequest, filters: Query[SiteFilters],
               page: Query[PageParams]) -> SitePage:
    """Dealers, customers, sites and locations you may see, top-down and by name."""
    user = acting_user(request)
    qs = Tenant.objects.for_user(user, VIEW)
    if filters.kind is not None:
        qs = qs.filter(kind=filters.kind)
    if filters.parent is not None:
        parent = get_object_or_404_scoped(Tenant, user, VIEW, pk=filters.parent)
        qs = qs.filter(parent=parent)
    if filters.q:
        qs = qs.filter(name__icontains=filters.q.strip())
    total, rows = paginate(qs.order_by("depth", "name", "pk"), page)
    parents = _visible_parents(user, rows)
    return SitePage(count=total, limit=page.limit, offset=page.offset,
                    items=[_site_out(t, parents) for t in rows])


@router.get("/sites/{site_id}", response={200: SiteOut, **ERRORS}, operation_id="getSite",
            summary="One tenant node")
def get_site(request: HttpRequest, site_id: Path[Id]) -> SiteOut:
    """One dealer, customer, site or location you may see."""
    user = acting_user(request)
    node = get_object_or_404_scoped(Tenant, user, VIEW, pk=site_id)
    return _site_out(node, _visible_parents(user, [node]))

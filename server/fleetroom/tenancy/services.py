"""Every write to the tenant tree, memberships, roles and access codes.

Each ``do_<verb>(..., acting_user)`` checks the actor's permission, writes the
model and its audit row in one transaction (architecture rule 4), and is what
views, the API and the CLI all call.  ``acting_user`` is a user or
:data:`~fleetroom.core.scoping.SYSTEM` (CLI/bootstrap; skips permission checks).

Nobody can hand out more than they hold: granting a membership, defining a
role or creating an access code requires the managing permission *and* every
granted permission on every tenant/site the grant covers
(:func:`check_grantable`).  Access codes are checked again at redemption, so a
code stops working once its creator has lost the rights it carries.

Structural changes (create, move, (de)activate) lock the tree's root row first.
That serialises them per tree on PostgreSQL (on SQLite every write transaction
is serialised anyway), so a node created under a subtree that is being moved
can never keep a stale path.  They are rare; the lock is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import CharField, F, Max, Value
from django.db.models.functions import Concat, Length, Substr
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from fleetroom.accounts.models import User
from fleetroom.core import audit
from fleetroom.core.scoping import (
    SYSTEM,
    SystemActor,
    clear_scope_cache,
    membership_permissions,
    minimise_prefixes,
    permissions_on,
    require_permission,
)
from fleetroom.tenancy import access_codes, lockout
from fleetroom.tenancy.audit_events import (
    AccessCodeCreated,
    AccessCodeFailed,
    AccessCodeLockedOut,
    AccessCodeRedeemed,
    AccessCodeRevoked,
    AccessCodeUnlocked,
    MembershipChanged,
    MembershipData,
    PasswordLinkIssued,
    RoleData,
    TenantActivation,
    TenantCreated,
    TenantMoved,
    TenantRenamed,
    UserCreated,
)
from fleetroom.tenancy.models import (
    ALLOWED_PARENT,
    AccessCode,
    LockoutCounter,
    Membership,
    Role,
    Tenant,
    TenantKind,
)
from fleetroom.tenancy.permissions import (
    ROLE_PERMISSIONS,
    BuiltinRole,
    Permission,
    as_permissions,
    normalise_permissions,
)

Actor = User | SystemActor

PATH_MAX = Tenant._meta.get_field("path").max_length or 255
CODE_MAX_LIFETIME: Final = timedelta(days=90)
CODE_MAX_USES: Final = 1000
REDEEM_PURPOSE: Final = "access_code"

INVALID_CODE = _("This access code is not valid.")
"""The one message for unknown, mistyped, expired, used-up and revoked codes (no oracle)."""
LOCKED_OUT = _("Too many failed attempts. Please try again later.")


# --- the tree ------------------------------------------------------------------------------

def _manage_permission(kind: str) -> Permission:
    if kind in (TenantKind.SITE, TenantKind.LOCATION):
        return Permission.MANAGE_SITES
    if kind == TenantKind.OPERATOR:
        return Permission.MANAGE_PLATFORM
    return Permission.MANAGE_TENANTS


def _check_parent(kind: str, parent_kind: str | None) -> None:
    allowed = ALLOWED_PARENT[kind]
    if parent_kind == allowed:
        return
    if kind == TenantKind.LOCATION and parent_kind == TenantKind.LOCATION:
        return
    raise ValidationError(_("A tenant of kind “%(kind)s” cannot be placed there."),
                          code="invalid_parent", params={"kind": TenantKind(kind).label})


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise ValidationError(_("A name is required."), code="required")
    if len(name) > 200:
        raise ValidationError(_("The name is too long."), code="max_length")
    return name


def _check_unique_name(parent: Tenant | None, name: str, exclude_pk: int | None = None) -> None:
    siblings = Tenant.objects.filter(parent=parent, name=name)
    if exclude_pk is not None:
        siblings = siblings.exclude(pk=exclude_pk)
    if siblings.exists():
        raise ValidationError(_("There is already a tenant with this name here."),
                              code="unique")


def _lock_roots(*root_ids: int) -> None:
    """Lock whole trees (in id order, so two movers cannot deadlock)."""
    for rid in sorted(set(root_ids)):
        Tenant.objects.select_for_update().filter(pk=rid).first()


def _recompute_active(node: Tenant) -> int:
    """Set ``active_in_tree`` across ``node``'s subtree; returns the subtree size."""
    base = True
    if node.parent_id is not None:
        base = Tenant.objects.filter(pk=node.parent_id, active_in_tree=True).exists()
    subtree = Tenant.objects.filter(path__startswith=node.path)
    size = subtree.update(active_in_tree=base)
    if base:
        inactive = subtree.filter(is_active=False).values_list("path", flat=True)
        for p in minimise_prefixes(inactive):
            Tenant.objects.filter(path__startswith=p).update(active_in_tree=False)
    return size


def do_create_tenant(parent: Tenant | None, kind: str, name: str, acting_user: Actor, *,
                     request: HttpRequest | None = None) -> Tenant:
    """A new node under ``parent`` (``None`` only for an operator root, by SYSTEM).

    Needs ``manage_sites`` (sites, locations) or ``manage_tenants`` (dealers,
    customers) on the parent.  A location may also hang under a location.
    """
    try:
        kind = TenantKind(kind)
    except ValueError:
        raise ValidationError(_("Unknown tenant kind."), code="invalid") from None
    name = _clean_name(name)
    if parent is None:
        if kind != TenantKind.OPERATOR:
            raise ValidationError(_("Only a platform operator can be a top-level tenant."),
                                  code="invalid_parent")
        if acting_user is not SYSTEM:
            raise PermissionDenied(_("You do not have permission to do this."))
    else:
        _check_parent(kind, parent.kind)
        require_permission(acting_user, _manage_permission(kind), parent)
    with transaction.atomic():
        if parent is not None:
            _lock_roots(parent.root_id)
            parent = Tenant.objects.get(pk=parent.pk)  # its path as of now, under the lock
            if not parent.active_in_tree:
                raise ValidationError(_("Nothing can be added below a deactivated tenant."),
                                      code="inactive")
        _check_unique_name(parent, name)
        try:
            with transaction.atomic():
                node = Tenant.objects.create(
                    kind=kind, name=name, parent=parent, path="",
                    depth=0 if parent is None else parent.depth + 1)
        except IntegrityError:
            raise ValidationError(_("There is already a tenant with this name here."),
                                  code="unique") from None
        node.path = f"{parent.path if parent else '/'}{node.pk}/"
        if len(node.path) > PATH_MAX:
            raise ValidationError(_("The tenant tree is too deep here."), code="too_deep")
        node.save(update_fields=["path"])
        audit.record("tenant.created", tenant=node, actor=acting_user, target=node,
                     request=request,
                     data=TenantCreated(kind=kind.value, name=name, path=node.path,
                                        parent_id=parent.pk if parent else None))
    return node


def do_rename(tenant: Tenant, name: str, acting_user: Actor, *,
              request: HttpRequest | None = None) -> Tenant:
    """Rename a node (unique among its siblings)."""
    name = _clean_name(name)
    require_permission(acting_user, _manage_permission(tenant.kind), tenant)
    with transaction.atomic():
        node = Tenant.objects.select_for_update().get(pk=tenant.pk)
        old = node.name
        if old == name:
            return node
        _check_unique_name(node.parent, name, exclude_pk=node.pk)
        node.name = name
        try:
            with transaction.atomic():
                node.save(update_fields=["name"])
        except IntegrityError:
            raise ValidationError(_("There is already a tenant with this name here."),
                                  code="unique") from None
        audit.record("tenant.renamed", tenant=node, actor=acting_user, target=node,
                     request=request, data=TenantRenamed(old_name=old, new_name=name))
    tenant.name = name
    return node


def do_move(tenant: Tenant, new_parent: Tenant, acting_user: Actor, *,
            request: HttpRequest | None = None) -> Tenant:
    """Hang ``tenant`` and its subtree under ``new_parent``, rewriting every path in one UPDATE.

    Needs the managing permission on the node and on the new parent.  Ids never
    change, so every foreign key, membership and audit chain stays valid; a
    membership on the old ancestors simply stops covering the subtree.
    """
    if tenant.parent_id is None:
        raise ValidationError(_("A top-level tenant cannot be moved."), code="root")
    _check_parent(tenant.kind, new_parent.kind)
    perm = _manage_permission(tenant.kind)
    require_permission(acting_user, perm, tenant)
    require_permission(acting_user, perm, new_parent)
    with transaction.atomic():
        _lock_roots(tenant.root_id, new_parent.root_id)
        node = Tenant.objects.get(pk=tenant.pk)
        target = Tenant.objects.get(pk=new_parent.pk)
        if target.path.startswith(node.path):
            raise ValidationError(_("A tenant cannot be moved below itself."), code="cycle")
        if node.parent_id == target.pk:
            return node
        if not target.active_in_tree:
            raise ValidationError(_("Nothing can be added below a deactivated tenant."),
                                  code="inactive")
        _check_unique_name(target, node.name, exclude_pk=node.pk)
        old_prefix, old_parent_id = node.path, node.parent_id
        new_prefix = f"{target.path}{node.pk}/"
        subtree = Tenant.objects.filter(path__startswith=old_prefix)
        longest = subtree.aggregate(m=Max(Length("path")))["m"] or len(old_prefix)
        if longest - len(old_prefix) + len(new_prefix) > PATH_MAX:
            raise ValidationError(_("The tenant tree is too deep here."), code="too_deep")
        subtree.update(
            path=Concat(Value(new_prefix), Substr("path", len(old_prefix) + 1),
                        output_field=CharField()),
            depth=F("depth") + (target.depth + 1 - node.depth),
        )
        Tenant.objects.filter(pk=node.pk).update(parent=target)
        node.refresh_from_db()
        size = _recompute_active(node)
        assert old_parent_id is not None
        audit.record("tenant.moved", tenant=node, actor=acting_user, target=node,
                     request=request,
                     data=TenantMoved(old_parent_id=old_parent_id, new_parent_id=target.pk,
                                      old_path=old_prefix, new_path=new_prefix,
                                      subtree_size=size))
        node.refresh_from_db()
    tenant.refresh_from_db()
    return node


def do_deactivate(tenant: Tenant, acting_user: Actor, *, reason: str = "",
                  request: HttpRequest | None = None) -> Tenant:
    """Switch a node off: it and its whole subtree vanish from every scope.

    Nothing is deleted; :func:`do_reactivate` brings the subtree back, except the
    parts that were deactivated on their own.  A top-level operator node can
    only be switched off by SYSTEM (it would lock everybody out).
    """
    if tenant.parent_id is None and acting_user is not SYSTEM:
        raise PermissionDenied(_("You do not have permission to do this."))
    require_permission(acting_user, _manage_permission(tenant.kind), tenant)
    with transaction.atomic():
        _lock_roots(tenant.root_id)
        node = Tenant.objects.get(pk=tenant.pk)
        if not node.is_active:
            return node
        Tenant.objects.filter(pk=node.pk).update(is_active=False)
        node.is_active = False
        _recompute_active(node)
        audit.record("tenant.deactivated", tenant=node, actor=acting_user, target=node,
                     request=request, data=TenantActivation(path=node.path, reason=reason))
        node.refresh_from_db()
    tenant.refresh_from_db()
    return node


def do_reactivate(tenant: Tenant, acting_user: Actor, *,
                  request: HttpRequest | None = None) -> Tenant:
    """Switch a node back on (needs the managing permission on its parent, which is live)."""
    if tenant.parent_id is None:
        if acting_user is not SYSTEM:
            raise PermissionDenied(_("You do not have permission to do this."))
    else:
        parent = Tenant.objects.get(pk=tenant.parent_id)
        require_permission(acting_user, _manage_permission(tenant.kind), parent)
    with transaction.atomic():
        _lock_roots(tenant.root_id)
        node = Tenant.objects.get(pk=tenant.pk)
        if node.is_active:
            return node
        Tenant.objects.filter(pk=node.pk).update(is_active=True)
        node.is_active = True
        _recompute_active(node)
        audit.record("tenant.reactivated", tenant=node, actor=acting_user, target=node,
                     request=request, data=TenantActivation(path=node.path))
        node.refresh_from_db()
    tenant.refresh_from_db()
    return node


# --- no escalation -------------------------------------------------------------------------

def _clean_sites(tenant: Tenant, sites: Iterable[Tenant] | None) -> list[Tenant] | None:
    """``None`` for "the whole tenant", else the validated, non-empty list of sites."""
    if sites is None:
        return None
    out = list({s.pk: s for s in sites}.values())
    if not out:
        raise ValidationError(_("Choose at least one site, or none to cover everything."),
                              code="required")
    fresh = {s.pk: s for s in Tenant.objects.filter(pk__in=[s.pk for s in out])}
    for s in out:
        f = fresh.get(s.pk)
        if (f is None or f.kind not in (TenantKind.SITE, TenantKind.LOCATION)
                or not f.path.startswith(tenant.path) or f.pk == tenant.pk):
            raise ValidationError(_("Only sites inside this tenant can be chosen."),
                                  code="invalid_site")
    return [fresh[s.pk] for s in out]


def check_grantable(actor: Actor, managing: Permission, tenant: Tenant,
                    permissions: Iterable[Permission | str],
                    sites: Sequence[Tenant] | None) -> None:
    """Refuse a grant broader than the actor's own rights (ValidationError).

    The actor must hold ``managing`` and every one of ``permissions`` on each
    place the grant covers: the tenant itself, or each listed site.
    """
    if actor is SYSTEM:
        return
    wanted = set(as_permissions(str(p) for p in permissions)) | {managing}
    for place in (sites if sites else [tenant]):
        if not wanted <= permissions_on(actor, place):
            raise ValidationError(
                _("You can only grant permissions you hold yourself, on tenants and sites "
                  "you manage."), code="escalation")


def _membership_data(m: Membership) -> MembershipData:
    return MembershipData(
        membership_id=m.pk, user_id=m.user_id, tenant_id=m.tenant_id, role=m.role,
        custom_role_id=m.custom_role_id, permissions=list(m.permissions),
        site_restricted=m.site_restricted,
        site_ids=sorted(m.sites.values_list("pk", flat=True)),
        expires_at=m.expires_at.isoformat() if m.expires_at else None,
        via_access_code_id=m.via_access_code_id)


def _role_source(tenant: Tenant, role: str | None, custom_role: Role | None,
                 permissions: Iterable[str] | None) -> tuple[str, Role | None, list[str],
                                                            frozenset[Permission]]:
    given = [x is not None for x in (role, custom_role, permissions)]
    if sum(given) != 1:
        raise ValidationError(_("Choose a role, a custom role or a set of permissions."),
                              code="role_source")
    if role is not None:
        try:
            builtin = BuiltinRole(role)
        except ValueError:
            raise ValidationError(_("Unknown role."), code="invalid_role") from None
        return builtin.value, None, [], ROLE_PERMISSIONS[builtin]
    if custom_role is not None:
        if not tenant.path.startswith(custom_role.tenant.path):
            raise ValidationError(_("This role cannot be used here."), code="invalid_role")
        return "", custom_role, [], as_permissions(custom_role.permissions)
    assert permissions is not None
    try:
        perms = normalise_permissions(permissions)
    except ValueError:
        raise ValidationError(_("Unknown permission."), code="invalid_permission") from None
    if not perms:
        raise ValidationError(_("Choose at least one permission."), code="required")
    return "", None, perms, as_permissions(perms)


# --- memberships ---------------------------------------------------------------------------

def do_grant_membership(user: User, tenant: Tenant, *, acting_user: Actor,
                        role: str | None = None, custom_role: Role | None = None,
                        permissions: Iterable[str] | None = None,
                        sites: Iterable[Tenant] | None = None,
                        expires_at: datetime | None = None,
                        request: HttpRequest | None = None) -> Membership:
    """Give ``user`` a role (or permission set) on ``tenant``, optionally only on ``sites``.

    Needs ``manage_users`` and every granted permission on what the membership covers.
    """
    if not tenant.active_in_tree:
        raise ValidationError(_("Nothing can be added below a deactivated tenant."),
                              code="inactive")
    role_value, crole, perm_list, perms = _role_source(tenant, role, custom_role, permissions)
    site_list = _clean_sites(tenant, sites)
    check_grantable(acting_user, Permission.MANAGE_USERS, tenant, perms, site_list)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError(_("The expiry must lie in the future."), code="past")
    with transaction.atomic():
        if Membership.objects.filter(user=user, tenant=tenant,
                                     via_access_code__isnull=True).exists():
            raise ValidationError(
                _("This user already has access here; change that membership instead."),
                code="unique")
        m = Membership.objects.create(
            user=user, tenant=tenant, role=role_value, custom_role=crole,
            permissions=perm_list, site_restricted=site_list is not None,
            created_by=acting_user if isinstance(acting_user, User) else None,
            expires_at=expires_at)
        if site_list:
            m.sites.set(site_list)
        audit.record("membership.granted", tenant=tenant, actor=acting_user, target=m,
                     request=request, data=_membership_data(m))
    clear_scope_cache(user)
    return m


_UNSET: Any = object()


def do_change_membership(membership: Membership, *, acting_user: Actor,
                         role: str | None = None, custom_role: Role | None = None,
                         permissions: Iterable[str] | None = None,
                         sites: Iterable[Tenant] | None = _UNSET,
                         expires_at: datetime | None = _UNSET,
                         request: HttpRequest | None = None) -> Membership:
    """Change role/permissions, site restriction or expiry (unset arguments keep theirs).

    The actor must be able to grant both the old and the new form, so nobody can
    edit a membership broader than their own.
    """
    m = membership
    tenant = m.tenant
    old_sites = list(m.sites.all()) if m.site_restricted else None
    check_grantable(acting_user, Permission.MANAGE_USERS, tenant,
                    membership_permissions(m), old_sites)
    if role is None and custom_role is None and permissions is None:
        role_value, crole, perm_list = m.role, m.custom_role, list(m.permissions)
        perms = membership_permissions(m)
    else:
        role_value, crole, perm_list, perms = _role_source(tenant, role, custom_role,
                                                           permissions)
    site_list = old_sites if sites is _UNSET else _clean_sites(tenant, sites)
    check_grantable(acting_user, Permission.MANAGE_USERS, tenant, perms, site_list)
    new_expiry = m.expires_at if expires_at is _UNSET else expires_at
    with transaction.atomic():
        m = Membership.objects.select_for_update().get(pk=m.pk)
        before = _membership_data(m)
        m.role, m.custom_role, m.permissions = role_value, crole, perm_list
        m.site_restricted = site_list is not None
        m.expires_at = new_expiry
        m.save()
        m.sites.set(site_list or [])
        after = _membership_data(m)
        if after != before:
            audit.record("membership.changed", tenant=tenant, actor=acting_user, target=m,
                         request=request, data=MembershipChanged(before=before, after=after))
    clear_scope_cache(membership.user)
    return m


def do_revoke_membership(membership: Membership, *, acting_user: Actor,
                         request: HttpRequest | None = None) -> None:
    """End a membership.  Anyone may leave; revoking others' needs the rights to grant it."""
    m = membership
    if not (isinstance(acting_user, User) and acting_user.pk == m.user_id):
        check_grantable(acting_user, Permission.MANAGE_USERS, m.tenant,
                        membership_permissions(m),
                        list(m.sites.all()) if m.site_restricted else None)
    with transaction.atomic():
        data = _membership_data(m)
        audit.record("membership.revoked", tenant=m.tenant, actor=acting_user, target=m,
                     request=request, data=data)
        m.delete()
    clear_scope_cache(membership.user)


# --- custom roles --------------------------------------------------------------------------

def do_create_role(tenant: Tenant, name: str, permissions: Iterable[str], *,
                   acting_user: Actor, request: HttpRequest | None = None) -> Role:
    """A named permission set for memberships on ``tenant`` and below (never above the actor's)."""
    name = _clean_name(name)[:100]
    _role, _crole, perm_list, perms = _role_source(tenant, None, None, permissions)
    check_grantable(acting_user, Permission.MANAGE_USERS, tenant, perms, None)
    with transaction.atomic():
        if Role.objects.filter(tenant=tenant, name=name).exists():
            raise ValidationError(_("There is already a role with this name here."),
                                  code="unique")
        r = Role.objects.create(tenant=tenant, name=name, permissions=perm_list,
                                created_by=acting_user if isinstance(acting_user, User)
                                else None)
        audit.record("role.created", tenant=tenant, actor=acting_user, target=r,
                     request=request,
                     data=RoleData(role_id=r.pk, name=r.name, permissions=r.permissions))
    return r


def do_change_role(role: Role, *, acting_user: Actor, name: str | None = None,
                   permissions: Iterable[str] | None = None,
                   request: HttpRequest | None = None) -> Role:
    """Rename or re-scope a custom role; takes effect for every membership using it."""
    check_grantable(acting_user, Permission.MANAGE_USERS, role.tenant,
                    as_permissions(role.permissions), None)
    new_name = _clean_name(name)[:100] if name is not None else role.name
    new_perms = list(role.permissions)
    if permissions is not None:
        _role, _crole, new_perms, perms = _role_source(role.tenant, None, None,
                                                         permissions)
        check_grantable(acting_user, Permission.MANAGE_USERS, role.tenant, perms, None)
    with transaction.atomic():
        r = Role.objects.select_for_update().get(pk=role.pk)
        old_name, old_perms = r.name, list(r.permissions)
        if new_name != old_name and Role.objects.filter(tenant=r.tenant_id,
                                                        name=new_name).exists():
            raise ValidationError(_("There is already a role with this name here."),
                                  code="unique")
        r.name, r.permissions = new_name, new_perms
        r.save()
        audit.record("role.changed", tenant=r.tenant, actor=acting_user, target=r,
                     request=request,
                     data=RoleData(role_id=r.pk, name=r.name, permissions=r.permissions,
                                   old_name=old_name, old_permissions=old_perms))
    return r


# --- access codes --------------------------------------------------------------------------

def do_create_access_code(creator: User, tenant: Tenant, permissions: Iterable[str],
                          sites: Iterable[Tenant] | None, expires_at: datetime,
                          max_uses: int = 1, *, label: str = "",
                          membership_expires_at: datetime | None = None,
                          request: HttpRequest | None = None) -> tuple[AccessCode, str]:
    """A new code and its text, which is shown this once and never stored.

    ``permissions`` ⊆ what the creator holds, ``sites`` (``None`` or empty for the
    whole tenant) ⊆ where the creator holds them, plus ``manage_access_codes``
    there; otherwise ValidationError.  Lifetime at most 90 days, 1..1000 uses.
    """
    if not isinstance(creator, User):
        raise PermissionDenied(_("You do not have permission to do this."))
    try:
        perm_list = normalise_permissions(permissions)
    except ValueError:
        raise ValidationError(_("Unknown permission."), code="invalid_permission") from None
    if not perm_list:
        raise ValidationError(_("Choose at least one permission."), code="required")
    site_list = list(sites or [])
    site_clean = _clean_sites(tenant, site_list) if site_list else None
    now = timezone.now()
    if expires_at <= now or expires_at > now + CODE_MAX_LIFETIME:
        raise ValidationError(_("An access code must expire within 90 days."),
                              code="expiry")
    if not 1 <= max_uses <= CODE_MAX_USES:
        raise ValidationError(_("An access code can be used between 1 and 1000 times."),
                              code="max_uses")
    if not tenant.active_in_tree:
        raise ValidationError(_("Nothing can be added below a deactivated tenant."),
                              code="inactive")
    check_grantable(creator, Permission.MANAGE_ACCESS_CODES, tenant, perm_list, site_clean)
    with transaction.atomic():
        for _attempt in range(5):
            lookup_id, secret = access_codes.new_code()
            if not AccessCode.objects.filter(lookup_id=lookup_id).exists():
                break
        else:  # pragma: no cover - 2^30 lookup ids
            raise RuntimeError("could not find a free access code id")
        code = AccessCode.objects.create(
            tenant=tenant, lookup_id=lookup_id,
            secret_hash=access_codes.hash_secret(lookup_id, secret), label=label[:200],
            permissions=perm_list, site_restricted=site_clean is not None,
            expires_at=expires_at, max_uses=max_uses,
            membership_expires_at=membership_expires_at, created_by=creator)
        if site_clean:
            code.sites.set(site_clean)
        audit.record("access_code.created", tenant=tenant, actor=creator, target=code,
                     request=request,
                     data=AccessCodeCreated(
                         lookup_id=lookup_id, label=code.label, permissions=perm_list,
                         site_restricted=code.site_restricted,
                         site_ids=sorted(s.pk for s in site_clean or []),
                         expires_at=expires_at.isoformat(), max_uses=max_uses,
                         membership_expires_at=(membership_expires_at.isoformat()
                                                if membership_expires_at else None)))
    return code, access_codes.display(lookup_id, secret)


def _attempt_redeem(user: User, text: str, ip: str | None,
                    ) -> Membership | tuple[str, AccessCode | None]:
    """Redeem in one transaction, or say why not (reason for the audit log only)."""
    parsed = access_codes.parse(text)
    if parsed is None:
        return "malformed", None
    lookup_id, secret = parsed
    with transaction.atomic():
        # No select_related: PostgreSQL refuses FOR UPDATE across the nullable join.
        code = AccessCode.objects.select_for_update().filter(lookup_id=lookup_id).first()
        if code is None:
            access_codes.hash_secret(lookup_id, secret)  # same work as a known id
            return "unknown", None
        if not access_codes.check_secret(lookup_id, secret, code.secret_hash):
            return "wrong_secret", code
        now = timezone.now()
        if code.revoked_at is not None:
            return "revoked", code
        if code.expires_at <= now:
            return "expired", code
        if code.use_count >= code.max_uses:
            return "used_up", code
        tenant = code.tenant
        if not tenant.active_in_tree:
            return "tenant_inactive", code
        if Membership.objects.filter(user=user, via_access_code=code).exists():
            return "already_redeemed", code
        sites = list(code.sites.all()) if code.site_restricted else None
        if sites is not None and not any(s.path.startswith(tenant.path) for s in sites):
            return "sites_gone", code
        creator = code.created_by
        if creator is None or not creator.is_active or creator.deactivated_at is not None:
            return "creator_inactive", code
        try:
            check_grantable(creator, Permission.MANAGE_ACCESS_CODES, tenant,
                            code.permissions, sites)
        except ValidationError:
            return "creator_lacks_permissions", code
        m = Membership.objects.create(
            user=user, tenant=tenant, permissions=list(code.permissions),
            site_restricted=sites is not None, created_by=creator,
            expires_at=code.membership_expires_at, via_access_code=code)
        if sites:
            m.sites.set(sites)
        AccessCode.objects.filter(pk=code.pk).update(use_count=F("use_count") + 1)
        audit.record("access_code.redeemed", tenant=tenant, actor=user, target=code, ip=ip,
                     data=AccessCodeRedeemed(lookup_id=code.lookup_id, membership_id=m.pk,
                                             use_count=code.use_count + 1))
        audit.record("membership.granted", tenant=tenant, actor=user, target=m, ip=ip,
                     data=_membership_data(m))
    return m


def do_redeem_access_code(user: User, code: str, request_ip: str | None) -> Membership:
    """Turn a code into a membership for ``user``; ValidationError with one message otherwise.

    Unknown, mistyped, expired, used-up, revoked and already-redeemed codes all
    give :data:`INVALID_CODE` (the audit log keeps the real reason).  After
    ``lockout_failures`` failures the user and the address are locked out for
    ``lockout_cooloff_minutes`` and get :data:`LOCKED_OUT` without the code being
    looked at.  Do not call it inside a transaction that is rolled back on
    error: the failure count must be committed.
    """
    ip = audit.normalise_ip(request_ip)
    keys = lockout.keys_for(REDEEM_PURPOSE, user, ip)
    live = user.is_active and user.deactivated_at is None
    if lockout.locked_keys(keys):
        with transaction.atomic():
            audit.record("access_code.failed", tenant=None, actor=user, ip=ip,
                         data=AccessCodeFailed(reason="locked_out"))
        raise ValidationError(LOCKED_OUT, code="locked_out")
    outcome = _attempt_redeem(user, code, ip) if live else ("user_inactive", None)
    if isinstance(outcome, Membership):
        # A success clears the user's own counter, not the address's (shared by others).
        lockout.register_success(lockout.keys_for(REDEEM_PURPOSE, user, None))
        clear_scope_cache(user)
        return outcome
    reason, found = outcome
    with transaction.atomic():
        newly_locked = lockout.register_failure(keys)
        tenant = found.tenant if found is not None else None
        audit.record("access_code.failed", tenant=tenant, actor=user, ip=ip,
                     target=found,
                     data=AccessCodeFailed(reason=reason,
                                           lookup_id=found.lookup_id if found else None))
        if newly_locked:
            audit.record("access_code.locked_out", tenant=None, actor=user, ip=ip,
                         data=AccessCodeLockedOut(keys=newly_locked))
    raise ValidationError(INVALID_CODE, code="invalid_code")


def do_revoke_access_code(code: AccessCode, *, acting_user: Actor,
                          revoke_memberships: bool = False,
                          request: HttpRequest | None = None) -> AccessCode:
    """Stop a code from being redeemed; optionally end the memberships it created."""
    require_permission(acting_user, Permission.MANAGE_ACCESS_CODES, code.tenant)
    revoked = 0
    with transaction.atomic():
        c = AccessCode.objects.select_for_update().get(pk=code.pk)
        if c.revoked_at is None:
            c.revoked_at = timezone.now()
            c.revoked_by = acting_user if isinstance(acting_user, User) else None
            c.save(update_fields=["revoked_at", "revoked_by"])
        if revoke_memberships:
            for m in list(c.memberships.select_related("tenant")):
                audit.record("membership.revoked", tenant=c.tenant, actor=acting_user,
                             target=m, request=request, data=_membership_data(m))
                m.delete()
                revoked += 1
        audit.record("access_code.revoked", tenant=c.tenant, actor=acting_user, target=c,
                     request=request,
                     data=AccessCodeRevoked(lookup_id=c.lookup_id, memberships_revoked=revoked))
    code.revoked_at = c.revoked_at
    return c


# --- accounts administered from a tenant ---------------------------------------------------
#
# Creating a person's account belongs here rather than in accounts/: an administrator
# may only create someone *into* a tenant they manage, so the account and its first
# membership are one transaction (no orphan account that nobody can see or manage).

def _may_administer_account(actor: Actor, target: User) -> bool:
    """The accounts app's rule for changing another person's account (unlock,
    deactivate, set a password): SYSTEM, an active superuser, or whoever a policy hook
    allows — tenancy's "could grant every live membership the target holds"."""
    from fleetroom.accounts import policy

    if actor is SYSTEM:
        return True
    assert isinstance(actor, User)
    if actor.is_active and actor.is_superuser:
        return True
    return any(check(actor, target) for check in policy.ACCOUNT_ADMIN_CHECKS)


def do_create_user(*, username: str, email: str, display_name: str, tenant: Tenant,
                   acting_user: Actor, role: str | None = None,
                   custom_role: Role | None = None, permissions: Iterable[str] | None = None,
                   sites: Iterable[Tenant] | None = None, expires_at: datetime | None = None,
                   request: HttpRequest | None = None) -> tuple[User, Membership]:
    """A new account without a usable password, and its first membership on ``tenant``.

    The grant is checked exactly like :func:`do_grant_membership` (and first, so a
    refused grant creates nothing).  The person sets a password through a link from
    :func:`do_issue_password_link`; an administrator never types or sees one.
    Username and e-mail must be unused, compared case-insensitively (allauth logs
    in with either, case-insensitively).
    """
    username = (username or "").strip()
    email = (email or "").strip()
    display_name = " ".join((display_name or "").split())
    site_list = _clean_sites(tenant, sites)
    _role, _crole, _perm_list, perms = _role_source(tenant, role, custom_role, permissions)
    check_grantable(acting_user, Permission.MANAGE_USERS, tenant, perms, site_list)
    with transaction.atomic():
        if (User.objects.filter(username__iexact=username).exists()
                or User.objects.filter(email__iexact=email).exists()):
            raise ValidationError(
                _("An account with this username or e-mail address already exists."),
                code="unique")
        user = User(username=username, email=email, first_name=display_name[:150])
        user.set_unusable_password()
        user.full_clean(exclude=["password", "last_name"], validate_unique=False)
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:
            raise ValidationError(
                _("An account with this username or e-mail address already exists."),
                code="unique") from None
        audit.record("user.created", tenant=tenant, actor=acting_user, target=user,
                     request=request,
                     data=UserCreated(user_id=user.pk, username=user.username,
                                      email=user.email))
        membership = do_grant_membership(user, tenant, acting_user=acting_user, role=role,
                                         custom_role=custom_role, permissions=permissions,
                                         sites=site_list, expires_at=expires_at,
                                         request=request)
    return user, membership


def do_issue_password_link(user: User, *, acting_user: Actor,
                           request: HttpRequest | None = None) -> str:
    """A one-time link (site-relative path) with which ``user`` sets a new password.

    It is allauth's password-reset link, so the page, the password policy, the
    session clean-up and the audit event of a reset all apply unchanged.  The
    token is bound to the current password hash: it dies once used, and after
    ``PASSWORD_RESET_TIMEOUT``.  For an account without a usable password a new
    random unusable one is stored first, so an earlier link stops working as well.
    Needs the right to administer the account (as for setting its password); an
    account that signs in through SSO gets no link (ValidationError).
    """
    from allauth.account.forms import default_token_generator
    from allauth.account.utils import user_pk_to_url_str
    from django.urls import reverse

    from fleetroom.accounts.sso.services import is_sso_managed

    if not _may_administer_account(acting_user, user):
        raise PermissionDenied(_("You may not change this account."))
    if is_sso_managed(user):
        # The reset form refuses such accounts (their directory is the only way in).
        raise ValidationError(_("This person signs in through their organisation and has "
                                "no password here."), code="sso_managed")
    with transaction.atomic():
        target = User.objects.select_for_update().get(pk=user.pk)
        had_password = target.has_usable_password()
        if not had_password:
            target.set_unusable_password()
            target.save(update_fields=["password"])
        audit.record("user.password_link_issued", tenant=None, actor=acting_user,
                     target=target, request=request,
                     data=PasswordLinkIssued(user_id=target.pk, had_password=had_password))
        token = default_token_generator.make_token(target)
    user.password = target.password
    return reverse("account_reset_password_from_key",
                   kwargs={"uidb36": user_pk_to_url_str(target), "key": token})


def access_code_lockout_keys(user: User) -> list[str]:
    """The user's own redemption counters that are locked right now (not the address's)."""
    return lockout.locked_keys(lockout.keys_for(REDEEM_PURPOSE, user, None))


def do_lift_access_code_lockout(user: User, *, acting_user: Actor,
                                request: HttpRequest | None = None) -> int:
    """Forget a user's failed code redemptions (the admin "unlock" for access codes).

    Only the user's own counter: an address counter is shared by everybody behind it
    and expires on its own.  Same right as unlocking a login.  Returns how many
    counters were cleared.
    """
    if not _may_administer_account(acting_user, user):
        raise PermissionDenied(_("You may not change this account."))
    keys = lockout.keys_for(REDEEM_PURPOSE, user, None)
    with transaction.atomic():
        present = list(LockoutCounter.objects.filter(key__in=keys)
                       .values_list("key", flat=True))
        if not present:
            return 0
        lockout.register_success(keys)
        audit.record("access_code.unlocked", tenant=None, actor=acting_user, target=user,
                     request=request, data=AccessCodeUnlocked(user_id=user.pk, keys=present))
    return len(present)

"""The one fail-closed scope: who sees which tenant's rows, and nothing by default."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError
from django.http import Http404
from django.utils import timezone
from fleetroom.accounts.models import User
from fleetroom.core import scoping
from fleetroom.core.audit import record
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM, get_object_or_404_scoped, restrict, scope
from fleetroom.tenancy import selectors, services
from fleetroom.tenancy.models import LockoutCounter, Membership, Role, Tenant
from fleetroom.tenancy.permissions import ROLE_PERMISSIONS, BuiltinRole, Permission

pytestmark = pytest.mark.django_db

ALL = ["op", "dA", "c1", "s11", "l111", "s12", "c2", "s21", "dB", "c3", "s31"]
DEALER_A = ["dA", "c1", "s11", "l111", "s12", "c2", "s21"]
CUST_1 = ["c1", "s11", "l111", "s12"]


def mkuser(name: str, **extra) -> User:
    return User.objects.create_user(username=name, email=f"{name}@example.com", **extra)


@pytest.fixture
def world():
    """A platform with two dealers, three customers, sites and a location; one Role row per
    tenant stands in for "an object of that tenant"; one user per role and edge case."""
    t: dict[str, Tenant] = {}

    def add(key, parent, kind, name):
        t[key] = services.do_create_tenant(t.get(parent), kind, name, SYSTEM)

    add("op", None, "operator", "Platform")
    add("dA", "op", "dealer", "Dealer A")
    add("c1", "dA", "customer", "Customer 1")
    add("s11", "c1", "site", "Site 1.1")
    add("l111", "s11", "location", "Loc 1.1.1")
    add("s12", "c1", "site", "Site 1.2")
    add("c2", "dA", "customer", "Customer 2")
    add("s21", "c2", "site", "Site 2.1")
    add("dB", "op", "dealer", "Dealer B")
    add("c3", "dB", "customer", "Customer 3")
    add("s31", "c3", "site", "Site 3.1")
    objs = {k: Role.objects.create(tenant=v, name=f"obj-{k}", permissions=["view_fleet"])
            for k, v in t.items()}

    u: dict[str, User] = {}

    def member(key, tenant_key, role, **kw):
        u[key] = mkuser(key)
        services.do_grant_membership(u[key], t[tenant_key], role=role, acting_user=SYSTEM, **kw)

    member("op_admin", "op", "operator_admin")
    member("dA_admin", "dA", "dealer_admin")
    member("dA_tech", "dA", "dealer_technician")
    member("c1_admin", "c1", "customer_admin")
    member("c1_viewer", "c1", "customer_viewer")
    member("s11_viewer", "c1", "customer_viewer", sites=[t["s11"]])
    member("expiring", "c1", "customer_admin",
           expires_at=timezone.now() + timedelta(seconds=30))
    u["nobody"] = mkuser("nobody")
    u["superuser"] = User.objects.create_superuser(username="root", email="root@example.com",
                                                   password="x" * 20)
    return t, objs, u


def visible(qs) -> list[str]:
    return sorted(r.name.removeprefix("obj-") for r in qs)


def visible_tenants(user, perm=Permission.VIEW_FLEET) -> list[str]:
    return sorted(selectors.visible_tenants(user, perm).values_list("name", flat=True))


EXPECTED_VIEW = {
    "op_admin": ALL,
    "dA_admin": DEALER_A,
    "dA_tech": DEALER_A,
    "c1_admin": CUST_1,
    "c1_viewer": CUST_1,
    "s11_viewer": ["l111", "s11"],
    "expiring": CUST_1,
    "nobody": [],
    "superuser": [],
}


@pytest.mark.parametrize(("who", "expected"), EXPECTED_VIEW.items())
def test_view_matrix_objects(world, who, expected):
    _, _, u = world
    assert visible(Role.objects.for_user(u[who], Permission.VIEW_FLEET)) == sorted(expected)


@pytest.mark.parametrize(("who", "expected"), EXPECTED_VIEW.items())
def test_view_matrix_tenants_themselves(world, who, expected):
    t, _, u = world
    names = {v.name: k for k, v in t.items()}
    assert sorted(names[n] for n in visible_tenants(u[who])) == sorted(expected)


@pytest.mark.parametrize(("who", "own", "child", "sibling", "parent", "foreign"), [
    ("op_admin", "op", "dA", None, None, None),
    ("dA_admin", "dA", "c1", "dB", "op", "c3"),
    ("dA_tech", "dA", "s21", "dB", "op", "s31"),
    ("c1_admin", "c1", "s11", "c2", "dA", "c3"),
    ("c1_viewer", "c1", "l111", "c2", "dA", "s31"),
    ("s11_viewer", "s11", "l111", "s12", "c1", "s21"),
])
def test_own_child_visible_sibling_parent_foreign_not(world, who, own, child, sibling, parent,
                                                      foreign):
    _, objs, u = world
    user = u[who]
    for key in (own, child):
        got = get_object_or_404_scoped(Role, user, Permission.VIEW_FLEET, pk=objs[key].pk)
        assert got.pk == objs[key].pk
    for key in (sibling, parent, foreign):
        if key is None:
            continue
        with pytest.raises(Http404):
            get_object_or_404_scoped(Role, user, Permission.VIEW_FLEET, pk=objs[key].pk)


@pytest.mark.parametrize("role", list(BuiltinRole))
def test_each_permission_follows_the_role(world, role):
    t, _objs, _ = world
    user = mkuser(f"r-{role}")
    services.do_grant_membership(user, t["c1"], role=role, acting_user=SYSTEM)
    for perm in Permission:
        expected = CUST_1 if perm in ROLE_PERMISSIONS[role] else []
        assert visible(Role.objects.for_user(user, perm)) == sorted(expected), perm


def test_no_membership_means_nothing_even_for_superuser(world):
    t, _objs, u = world
    for who in ("nobody", "superuser"):
        assert scope(u[who], Permission.VIEW_FLEET).is_empty
        assert not Role.objects.for_user(u[who], Permission.VIEW_FLEET).exists()
        with pytest.raises(Http404):
            get_object_or_404_scoped(Tenant, u[who], Permission.VIEW_FLEET, pk=t["op"].pk)
    assert not restrict(Role.objects.all(), None, Permission.VIEW_FLEET).exists()
    from django.contrib.auth.models import AnonymousUser
    assert not restrict(Role.objects.all(), AnonymousUser(), Permission.VIEW_FLEET).exists()


def test_expired_membership_sees_nothing(world):
    _t, _, u = world
    m = Membership.objects.get(user=u["expiring"])
    Membership.objects.filter(pk=m.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    fresh = User.objects.get(pk=u["expiring"].pk)
    assert visible(Role.objects.for_user(fresh, Permission.VIEW_FLEET)) == []


def test_cached_scope_expires_with_the_membership(world):
    _t, _, u = world
    user = u["expiring"]
    assert visible(Role.objects.for_user(user, Permission.VIEW_FLEET)) == sorted(CUST_1)
    # Same user object (same request), but the membership runs out meanwhile:
    cached = getattr(user, scoping.CACHE_ATTR)
    setattr(user, scoping.CACHE_ATTR,
            scoping._Resolved(cached.grants, timezone.now() - timedelta(microseconds=1)))
    Membership.objects.filter(user=user).update(expires_at=timezone.now())
    assert visible(Role.objects.for_user(user, Permission.VIEW_FLEET)) == []


def test_inactive_or_deactivated_user_sees_nothing(world):
    _, _, u = world
    user = u["c1_admin"]
    user.is_active = False
    assert not Role.objects.for_user(user, Permission.VIEW_FLEET).exists()
    user.is_active = True
    user.deactivated_at = timezone.now()
    assert not Role.objects.for_user(user, Permission.VIEW_FLEET).exists()


def test_deactivated_tenant_vanishes_for_everybody(world):
    t, _objs, u = world
    services.do_deactivate(t["c1"], SYSTEM)
    for who in ("c1_admin", "c1_viewer", "s11_viewer"):
        fresh = User.objects.get(pk=u[who].pk)
        assert visible(Role.objects.for_user(fresh, Permission.VIEW_FLEET)) == []
    dealer_admin = User.objects.get(pk=u["dA_admin"].pk)
    assert visible(Role.objects.for_user(dealer_admin, Permission.VIEW_FLEET)) == [
        "c2", "dA", "s21"]
    # ... except on the screens that reactivate things:
    assert "c1" in visible(Role.objects.for_user(dealer_admin, Permission.VIEW_FLEET,
                                                 include_inactive=True))
    services.do_reactivate(t["c1"], dealer_admin)
    assert visible(Role.objects.for_user(u["c1_viewer"], Permission.VIEW_FLEET)) == sorted(
        CUST_1)


def test_moving_a_customer_moves_its_visibility(world):
    t, _objs, u = world
    services.do_move(t["c1"], t["dB"], SYSTEM)
    dA = User.objects.get(pk=u["dA_admin"].pk)
    assert visible(Role.objects.for_user(dA, Permission.VIEW_FLEET)) == ["c2", "dA", "s21"]
    b_admin = mkuser("dB_admin")
    services.do_grant_membership(b_admin, t["dB"], role="dealer_admin", acting_user=SYSTEM)
    assert visible(Role.objects.for_user(b_admin, Permission.VIEW_FLEET)) == sorted(
        ["dB", "c3", "s31", *CUST_1])
    # the customer's own users are unaffected
    assert visible(Role.objects.for_user(u["c1_admin"], Permission.VIEW_FLEET)) == sorted(
        CUST_1)


def test_site_restriction_fails_closed_when_the_site_leaves(world):
    t, _, u = world
    services.do_move(t["s11"], t["c2"], SYSTEM)  # the only listed site moves away
    fresh = User.objects.get(pk=u["s11_viewer"].pk)
    assert visible(Role.objects.for_user(fresh, Permission.VIEW_FLEET)) == []


def test_several_memberships_union(world):
    t, _, u = world
    user = u["c1_viewer"]
    services.do_grant_membership(user, t["c3"], role="customer_viewer", acting_user=SYSTEM)
    assert visible(Role.objects.for_user(user, Permission.VIEW_FLEET)) == sorted(
        [*CUST_1, "c3", "s31"])
    assert visible(Role.objects.for_user(user, Permission.MANAGE_USERS)) == []


def test_get_object_or_404_scoped_accepts_querysets_and_hides_missing_rows(world):
    _t, objs, u = world
    qs = Role.objects.filter(name__startswith="obj-")
    assert get_object_or_404_scoped(qs, u["c1_admin"], "view_fleet", pk=objs["s12"].pk)
    with pytest.raises(Http404):
        get_object_or_404_scoped(qs, u["c1_admin"], "view_fleet", pk=objs["c3"].pk)
    with pytest.raises(Http404):
        get_object_or_404_scoped(qs, u["c1_admin"], "view_fleet", pk=10**9)


def test_model_without_tenant_field_cannot_be_scoped(world):
    _, _, u = world
    with pytest.raises(ImproperlyConfigured):
        restrict(LockoutCounter.objects.all(), u["op_admin"], Permission.VIEW_FLEET)
    with pytest.raises(ImproperlyConfigured):
        restrict(User.objects.all(), u["op_admin"], Permission.VIEW_FLEET)


def test_unknown_permission_is_an_error(world):
    _, _, u = world
    with pytest.raises(ValueError):
        scope(u["op_admin"], "see_everything")


def test_scope_is_a_few_prefixes_and_cached(world, django_assert_num_queries):
    t, _, u = world
    user = User.objects.get(pk=u["dA_admin"].pk)
    services.do_grant_membership(user, t["c1"], role="customer_viewer", acting_user=SYSTEM)
    f = scope(user, Permission.VIEW_FLEET)
    assert f.prefixes == (t["dA"].path,)  # the customer lies below the dealer: one prefix
    with django_assert_num_queries(1):  # memberships are cached on the user object
        assert Role.objects.for_user(user, Permission.VIEW_FLEET).count() == len(DEALER_A)
    fresh = User.objects.get(pk=user.pk)
    with django_assert_num_queries(3):  # memberships, their sites, then the query itself
        assert Role.objects.for_user(fresh, Permission.VIEW_FLEET).count() == len(DEALER_A)


def test_platform_rows_only_for_operator_admins(world):
    t, _, u = world
    record("platform.test", tenant=None, actor=SYSTEM, data={})
    record("tenant.test", tenant=t["c1"], actor=SYSTEM, data={})
    assert AuditEvent.objects.for_user(u["op_admin"], Permission.VIEW_AUDIT).filter(
        action__endswith=".test").count() == 2
    assert list(AuditEvent.objects.for_user(u["c1_admin"], Permission.VIEW_AUDIT)
                .filter(action__endswith=".test").values_list("action", flat=True)) == [
        "tenant.test"]
    assert not AuditEvent.objects.for_user(u["c1_viewer"], Permission.VIEW_AUDIT).exists()


def test_has_permission_and_permissions_on(world):
    t, _, u = world
    assert scoping.has_permission(u["dA_tech"], Permission.MANAGE_AGENTS, t["s21"])
    assert not scoping.has_permission(u["dA_tech"], Permission.MANAGE_USERS, t["s21"])
    assert scoping.permissions_on(u["c1_viewer"], t["s12"]) == ROLE_PERMISSIONS[
        BuiltinRole.CUSTOMER_VIEWER]
    assert scoping.permissions_on(u["c1_viewer"], t["c2"]) == frozenset()
    with pytest.raises(PermissionDenied):
        scoping.require_permission(u["c1_viewer"], Permission.EDIT_DEVICES, t["c1"])
    scoping.require_permission(SYSTEM, Permission.MANAGE_PLATFORM, t["c1"])


def test_memberships_cannot_escalate(world):
    t, _, u = world
    target = mkuser("newbie")
    with pytest.raises(ValidationError):  # tech has no manage_users at all
        services.do_grant_membership(target, t["c1"], role="customer_viewer",
                                     acting_user=u["dA_tech"])
    with pytest.raises(ValidationError):  # customer admin cannot hand out dealer rights
        services.do_grant_membership(target, t["c1"], role="dealer_admin",
                                     acting_user=u["c1_admin"])
    with pytest.raises(ValidationError):  # ... nor act on a sibling customer
        services.do_grant_membership(target, t["c2"], role="customer_viewer",
                                     acting_user=u["c1_admin"])
    m = services.do_grant_membership(target, t["c1"], role="customer_viewer",
                                     acting_user=u["c1_admin"])
    with pytest.raises(ValidationError):  # and cannot raise it above their own
        services.do_change_membership(m, permissions=["manage_platform"],
                                      acting_user=u["c1_admin"])
    services.do_change_membership(m, sites=[t["s12"]], acting_user=u["c1_admin"])
    assert visible_tenants(target) == ["Site 1.2"]
    # a dealer admin's membership cannot be touched by a customer admin
    dadm = Membership.objects.get(user=u["dA_admin"])
    with pytest.raises(ValidationError):
        services.do_revoke_membership(dadm, acting_user=u["c1_admin"])
    mpk = m.pk
    services.do_revoke_membership(m, acting_user=u["c1_admin"])
    assert visible_tenants(target) == []
    actions = list(AuditEvent.objects.filter(target_type="tenancy.membership",
                                             target_id=str(mpk))
                   .order_by("id").values_list("action", flat=True))
    assert actions == ["membership.granted", "membership.changed", "membership.revoked"]


def test_membership_validation(world):
    t, _, _u = world
    target = mkuser("x")
    with pytest.raises(ValidationError):  # nothing to grant
        services.do_grant_membership(target, t["c1"], acting_user=SYSTEM)
    with pytest.raises(ValidationError):  # two sources
        services.do_grant_membership(target, t["c1"], role="customer_viewer",
                                     permissions=["view_fleet"], acting_user=SYSTEM)
    with pytest.raises(ValidationError):
        services.do_grant_membership(target, t["c1"], permissions=["fly"], acting_user=SYSTEM)
    with pytest.raises(ValidationError):  # a site of another customer
        services.do_grant_membership(target, t["c1"], role="customer_viewer",
                                     sites=[t["s21"]], acting_user=SYSTEM)
    with pytest.raises(ValidationError):  # restricted to nothing is refused, not "all"
        services.do_grant_membership(target, t["c1"], role="customer_viewer", sites=[],
                                     acting_user=SYSTEM)
    services.do_grant_membership(target, t["c1"], role="customer_viewer", acting_user=SYSTEM)
    with pytest.raises(ValidationError):  # one direct membership per tenant
        services.do_grant_membership(target, t["c1"], role="customer_admin", acting_user=SYSTEM)


def test_custom_roles(world):
    t, _objs, u = world
    role = services.do_create_role(t["dA"], "Billing", ["view_reports", "export_data"],
                                   acting_user=u["dA_admin"])
    with pytest.raises(ValidationError):  # more than the creator holds
        services.do_create_role(t["dA"], "God", ["manage_platform"], acting_user=u["dA_admin"])
    clerk = mkuser("clerk")
    services.do_grant_membership(clerk, t["c2"], custom_role=role, acting_user=u["dA_admin"])
    assert visible(Role.objects.for_user(clerk, Permission.EXPORT_DATA)) == ["c2", "s21"]
    assert visible(Role.objects.for_user(clerk, Permission.VIEW_FLEET)) == []
    with pytest.raises(ValidationError):  # a dealer's role is not usable at another dealer
        services.do_grant_membership(mkuser("y"), t["c3"], custom_role=role, acting_user=SYSTEM)
    services.do_change_role(role, permissions=["view_fleet"], acting_user=u["dA_admin"])
    clerk = User.objects.get(pk=clerk.pk)
    assert visible(Role.objects.for_user(clerk, Permission.VIEW_FLEET)) == ["c2", "s21"]
    assert visible(Role.objects.for_user(clerk, Permission.EXPORT_DATA)) == []
    # Moving the customer away from the dealer stops the dealer's role there (fail closed).
    services.do_move(t["c2"], t["dB"], SYSTEM)
    clerk = User.objects.get(pk=clerk.pk)
    assert visible(Role.objects.for_user(clerk, Permission.VIEW_FLEET)) == []


def test_anyone_may_leave(world):
    _t, _, u = world
    m = Membership.objects.get(user=u["c1_viewer"])
    services.do_revoke_membership(m, acting_user=u["c1_viewer"])
    assert visible_tenants(u["c1_viewer"]) == []

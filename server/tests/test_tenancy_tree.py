"""The tenant tree: create, rename, move (whole subtree re-pathed), (de)activate."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from fleetroom.accounts.models import User
from fleetroom.core.audit import verify_chain
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy import selectors, services
from fleetroom.tenancy.models import Tenant

pytestmark = pytest.mark.django_db


def user(name: str) -> User:
    return User.objects.create_user(username=name, email=f"{name}@example.com")


def node(parent, kind, name):
    return services.do_create_tenant(parent, kind, name, SYSTEM)


@pytest.fixture
def tree():
    op = node(None, "operator", "Platform")
    d1 = node(op, "dealer", "Dealer One")
    d2 = node(op, "dealer", "Dealer Two")
    c1 = node(d1, "customer", "Acme")
    s1 = node(c1, "site", "Berlin")
    l1 = node(s1, "location", "Floor 1")
    l2 = node(l1, "location", "Room 101")
    return {"op": op, "d1": d1, "d2": d2, "c1": c1, "s1": s1, "l1": l1, "l2": l2}


def test_paths_and_depths(tree):
    op, d1, c1, l2 = tree["op"], tree["d1"], tree["c1"], tree["l2"]
    assert op.path == f"/{op.pk}/"
    assert op.depth == 0
    assert c1.path == f"/{op.pk}/{d1.pk}/{c1.pk}/"
    assert c1.depth == 2
    assert l2.depth == 5
    assert l2.is_within(c1)
    assert not c1.is_within(l2)
    assert l2.root_id == op.pk
    assert l2.ancestor_ids == [op.pk, d1.pk, c1.pk, tree["s1"].pk, tree["l1"].pk]


def test_selectors_subtree_and_ancestors(tree):
    names = [t.name for t in selectors.subtree(tree["d1"])]
    assert names == ["Dealer One", "Acme", "Berlin", "Floor 1", "Room 101"]
    assert [t.name for t in selectors.subtree(tree["s1"], include_self=False)] == [
        "Floor 1", "Room 101"]
    assert [t.name for t in selectors.ancestors(tree["l2"])] == [
        "Platform", "Dealer One", "Acme", "Berlin", "Floor 1"]
    assert [t.name for t in selectors.ancestors(tree["op"], include_self=True)] == ["Platform"]
    assert [t.name for t in selectors.children(tree["op"])] == ["Dealer One", "Dealer Two"]


@pytest.mark.parametrize(("parent_key", "kind"), [
    ("op", "customer"), ("op", "site"), ("d1", "site"), ("c1", "location"),
    ("s1", "customer"), ("c1", "dealer"), ("l1", "site"), ("op", "operator"),
])
def test_allowed_parent_is_enforced(tree, parent_key, kind):
    with pytest.raises(ValidationError):
        node(tree[parent_key], kind, "Wrong")


def test_only_operator_at_top_and_only_by_system():
    with pytest.raises(ValidationError):
        node(None, "dealer", "Loose dealer")
    with pytest.raises(PermissionDenied):
        services.do_create_tenant(None, "operator", "Other", user("someone"))


def test_unknown_kind_and_blank_name(tree):
    with pytest.raises(ValidationError):
        node(tree["op"], "galaxy", "X")
    with pytest.raises(ValidationError):
        node(tree["op"], "dealer", "   ")


def test_names_unique_among_siblings_only(tree):
    with pytest.raises(ValidationError):
        node(tree["op"], "dealer", "Dealer One")
    node(tree["d2"], "customer", "Acme")  # same name under another dealer is fine


def test_rename(tree):
    c1 = tree["c1"]
    services.do_rename(c1, "  Acme   GmbH ", SYSTEM)
    c1.refresh_from_db()
    assert c1.name == "Acme GmbH"
    ev = AuditEvent.objects.filter(action="tenant.renamed").get()
    assert ev.data == {"old_name": "Acme", "new_name": "Acme GmbH"}
    assert ev.tenant_id == c1.pk
    with pytest.raises(ValidationError):
        services.do_rename(tree["d2"], "Dealer One", SYSTEM)


def test_move_rewrites_the_whole_subtree(tree):
    op, d2, c1, s1, l1, l2 = (tree[k] for k in ("op", "d2", "c1", "s1", "l1", "l2"))
    other = node(tree["d1"], "customer", "Other")  # not in the moved subtree
    old_other_path = other.path
    services.do_move(c1, d2, SYSTEM)
    for t in (c1, s1, l1, l2, other):
        t.refresh_from_db()
    assert c1.parent_id == d2.pk
    assert c1.path == f"/{op.pk}/{d2.pk}/{c1.pk}/"
    assert s1.path == f"{c1.path}{s1.pk}/"
    assert l2.path == f"{c1.path}{s1.pk}/{l1.pk}/{l2.pk}/"
    assert (c1.depth, s1.depth, l1.depth, l2.depth) == (2, 3, 4, 5)
    assert other.path == old_other_path
    assert [t.name for t in selectors.subtree(d2)] == [
        "Dealer Two", "Acme", "Berlin", "Floor 1", "Room 101"]
    assert [t.name for t in selectors.subtree(tree["d1"])] == ["Dealer One", "Other"]
    ev = AuditEvent.objects.filter(action="tenant.moved").get()
    assert ev.data["subtree_size"] == 4
    assert ev.data["old_parent_id"] == tree["d1"].pk
    assert verify_chain() == []


def test_move_location_changes_depth(tree):
    s2 = node(tree["c1"], "site", "Hamburg")
    l1, l2 = tree["l1"], tree["l2"]
    services.do_move(l2, s2, SYSTEM)  # location under location → under a site
    l2.refresh_from_db()
    assert l2.depth == 4
    assert l2.path == f"{s2.path}{l2.pk}/"
    services.do_move(l2, l1, SYSTEM)  # and back under a location
    l2.refresh_from_db()
    assert l2.depth == 5


def test_move_refusals(tree):
    with pytest.raises(ValidationError):  # below itself
        services.do_move(tree["s1"], tree["l2"], SYSTEM)
    with pytest.raises(ValidationError):  # wrong kind of parent
        services.do_move(tree["c1"], tree["op"], SYSTEM)
    with pytest.raises(ValidationError):  # the root does not move
        services.do_move(tree["op"], tree["d1"], SYSTEM)
    node(tree["d2"], "customer", "Acme")
    with pytest.raises(ValidationError):  # name taken at the destination
        services.do_move(tree["c1"], tree["d2"], SYSTEM)


def test_deactivate_hides_subtree_and_reactivate_restores_it(tree):
    d1, c1, s1, l2 = tree["d1"], tree["c1"], tree["s1"], tree["l2"]
    services.do_deactivate(s1, SYSTEM, reason="closed")
    for t in (c1, s1, l2):
        t.refresh_from_db()
    assert c1.active_in_tree
    assert not s1.is_active
    assert not s1.active_in_tree
    assert not l2.active_in_tree
    assert l2.is_active  # its own switch is untouched
    assert [t.name for t in selectors.subtree(d1)] == ["Dealer One", "Acme"]
    with pytest.raises(ValidationError):
        node(l2, "location", "New room")
    # Deactivating the customer too, then reactivating only the customer,
    # keeps the separately deactivated site off.
    services.do_deactivate(c1, SYSTEM)
    services.do_reactivate(c1, SYSTEM)
    s1.refresh_from_db()
    c1.refresh_from_db()
    assert c1.active_in_tree
    assert not s1.active_in_tree
    services.do_reactivate(s1, SYSTEM)
    l2.refresh_from_db()
    assert l2.active_in_tree
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-4:] == ["tenant.deactivated", "tenant.deactivated",
                            "tenant.reactivated", "tenant.reactivated"]


def test_move_into_deactivated_parent_refused_and_out_of_it_reactivates(tree):
    services.do_deactivate(tree["d2"], SYSTEM)
    with pytest.raises(ValidationError):
        services.do_move(tree["c1"], tree["d2"], SYSTEM)
    services.do_deactivate(tree["d1"], SYSTEM)
    services.do_reactivate(tree["d2"], SYSTEM)
    services.do_move(tree["c1"], tree["d2"], SYSTEM)  # from an inactive dealer to a live one
    tree["l2"].refresh_from_db()
    assert tree["l2"].active_in_tree


def test_root_deactivation_needs_system(tree):
    admin = user("opadmin")
    services.do_grant_membership(admin, tree["op"], role="operator_admin", acting_user=SYSTEM)
    with pytest.raises(PermissionDenied):
        services.do_deactivate(tree["op"], admin)


def test_tree_services_check_permissions(tree):
    viewer = user("viewer")
    services.do_grant_membership(viewer, tree["c1"], role="customer_viewer", acting_user=SYSTEM)
    cadmin = user("cadmin")
    services.do_grant_membership(cadmin, tree["c1"], role="customer_admin", acting_user=SYSTEM)
    with pytest.raises(PermissionDenied):
        services.do_create_tenant(tree["c1"], "site", "Munich", viewer)
    site = services.do_create_tenant(tree["c1"], "site", "Munich", cadmin)  # manage_sites
    services.do_rename(site, "München", cadmin)
    services.do_move(tree["l1"], site, cadmin)
    with pytest.raises(PermissionDenied):  # customers are the dealer's business
        services.do_create_tenant(tree["d1"], "customer", "Rival", cadmin)
    with pytest.raises(PermissionDenied):  # cannot move into another dealer's customer
        services.do_move(site, node(tree["d2"], "customer", "Other"), cadmin)
    dadmin = user("dadmin")
    services.do_grant_membership(dadmin, tree["d1"], role="dealer_admin", acting_user=SYSTEM)
    services.do_create_tenant(tree["d1"], "customer", "Globex", dadmin)
    with pytest.raises(PermissionDenied):
        services.do_create_tenant(tree["op"], "dealer", "Dealer Three", dadmin)
    ev = AuditEvent.objects.filter(action="tenant.created", actor=dadmin).get()
    assert ev.actor_label == "dadmin"
    assert ev.data["name"] == "Globex"


def test_tree_too_deep_is_refused(tree):
    parent = tree["l2"]
    depth = 0
    while len(parent.path) + len(str(parent.pk)) + 1 < 255 - 5:
        parent = node(parent, "location", f"L{depth}")
        depth += 1
    assert depth > 20  # deep enough for any real building
    def deepen(parent):
        for i in range(3):
            parent = node(parent, "location", f"X{i}")

    with pytest.raises(ValidationError, match="too deep"):
        deepen(parent)
    assert len(parent.path) <= 255
    assert Tenant.objects.filter(path="").count() == 0  # nothing half-created

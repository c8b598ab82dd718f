"""Administration pages for the tenant tree (sites), and the profile page.

Users and memberships: ``test_admin_users.py``; access codes: ``test_admin_access_codes.py``;
the route × role × tenant matrix: ``test_admin_matrix.py``.  Everything runs through
the real views, forms, services and database; expected values come from the world
the test built (``test_admin_support.build_world``).
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation
from fleetroom.accounts.testing import assert_no_inline_code
from fleetroom.core.audit import verify_chain
from fleetroom.core.models import AuditEvent
from fleetroom.tenancy.models import Tenant

from server.tests.test_admin_support import (
    build_world,
    client_for,
    messages_of,
    url,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def w():
    return build_world()


def tree_names(response) -> list[str]:
    return [row["tenant"].name for row in response.context["page"].object_list]


# --- the tree --------------------------------------------------------------------------------

def test_customer_admin_sees_only_its_own_subtree(w):
    r = client_for(w.a_admin).get(url("site_list"))
    assert r.status_code == 200
    assert tree_names(r) == ["Customer A", "A North", "Room 1", "A South"]
    html = r.content.decode()
    for foreign in ("Customer B", "B Main", "Dealer One", "Dealer Two", "Customer Z", "Platform"):
        assert foreign not in html
    # Indentation relative to the visible tree: the customer, its sites, the room.
    indents = {row["tenant"].name: row["indent"] for row in r.context["page"].object_list}
    assert indents == {"Customer A": 0, "A North": 1, "Room 1": 2, "A South": 1}
    assert 'class="indent-2"' in html
    assert_no_inline_code(html)


def test_dealer_admin_sees_both_customers_not_the_other_dealer(w):
    r = client_for(w.d1_admin).get(url("site_list"))
    names = tree_names(r)
    assert names[0] == "Dealer One"
    assert {"Customer A", "Customer B", "A North", "Room 1", "A South", "B Main"} <= set(names)
    assert not {"Dealer Two", "Customer Z", "Z Main", "Platform"} & set(names)


def test_site_restricted_admin_sees_only_its_site(w):
    r = client_for(w.a_north_admin).get(url("site_list"))
    assert tree_names(r) == ["A North", "Room 1"]
    assert client_for(w.a_north_admin).get(url("tenant_detail", w.a_south.pk)).status_code == 404
    assert client_for(w.a_north_admin).get(url("tenant_detail", w.ca.pk)).status_code == 404


def test_search_is_flat_with_scoped_paths_and_htmx_gets_the_rows_only(w):
    client = client_for(w.a_admin)
    r = client.get(url("site_list"), {"q": "room"})
    rows = r.context["page"].object_list
    assert [row["label"] for row in rows] == ["Customer A › A North › Room 1"]
    r = client.get(url("site_list"), {"q": "main"})  # B Main and Z Main exist, not in scope
    assert r.context["page"].object_list == []
    r = client.get(url("site_list"), {"q": "north"}, HTTP_HX_REQUEST="true",
                   HTTP_HX_TARGET="site-rows")
    html = r.content.decode()
    assert html.lstrip().startswith('<div id="site-rows">')
    assert "<html" not in html
    assert "A North" in html
    assert "HX-Request" in r.headers["Vary"]
    # A history restore of the pushed search URL gets the whole page, not the rows.
    r = client.get(url("site_list"), {"q": "north"}, HTTP_HX_REQUEST="true",
                   HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in r.content.decode()


def test_tree_needs_a_permission_somewhere(w):
    assert client_for(w.nobody).get(url("site_list")).status_code == 403
    assert client_for(w.a_viewer).get(url("site_list")).status_code == 200


def test_detail_shows_children_members_and_only_allowed_actions(w):
    admin = client_for(w.a_admin).get(url("tenant_detail", w.ca.pk))
    html = admin.content.decode()
    assert [c.name for c in admin.context["children"]] == ["A North", "A South"]
    assert {row["m"].user.username for row in admin.context["members"]} == {
        "a-admin", "a-viewer", "a-north-admin"}
    # A customer administrator adds sites to its customer but cannot rename or move it.
    assert url("tenant_create", w.ca.pk) in html
    assert url("tenant_rename", w.ca.pk) not in html
    assert url("tenant_move", w.ca.pk) not in html
    assert url("tenant_deactivate", w.ca.pk) not in html
    viewer = client_for(w.a_viewer).get(url("tenant_detail", w.ca.pk)).content.decode()
    assert url("tenant_create", w.ca.pk) not in viewer
    assert "a-north-admin" not in viewer  # who has access is for user managers only
    site = client_for(w.a_admin).get(url("tenant_detail", w.a_north.pk)).content.decode()
    for name in ("tenant_create", "tenant_rename", "tenant_move", "tenant_deactivate"):
        assert url(name, w.a_north.pk) in site


# --- changes ---------------------------------------------------------------------------------

def test_create_site_and_location(w):
    client = client_for(w.a_admin)
    r = client.post(url("tenant_create", w.ca.pk), {"name": "  A   East "})
    site = Tenant.objects.get(parent=w.ca, name="A East")
    assert r.status_code == 302
    assert r.headers["Location"] == url("tenant_detail", site.pk)
    assert site.kind == "site"
    r = client.post(url("tenant_create", site.pk), {"name": "Cellar"})
    room = Tenant.objects.get(parent=site)
    assert (room.kind, room.name) == ("location", "Cellar")
    events = AuditEvent.objects.filter(action="tenant.created", actor=w.a_admin)
    assert sorted(e.data["name"] for e in events) == ["A East", "Cellar"]
    assert verify_chain() == []


def test_create_refuses_a_duplicate_name_on_the_form(w):
    r = client_for(w.a_admin).post(url("tenant_create", w.ca.pk), {"name": "A North"})
    assert r.status_code == 400
    assert "There is already a tenant with this name here." in r.content.decode()
    assert Tenant.objects.filter(parent=w.ca, name="A North").count() == 1


def test_customer_admin_cannot_create_a_customer(w):
    """Creating below a dealer needs manage_tenants there: the dealer is not in scope (404)."""
    r = client_for(w.a_admin).post(url("tenant_create", w.d1.pk), {"name": "Sneaky"})
    assert r.status_code == 404
    assert not Tenant.objects.filter(name="Sneaky").exists()
    r = client_for(w.d1_admin).post(url("tenant_create", w.d1.pk), {"name": "Customer C"})
    assert Tenant.objects.get(name="Customer C").kind == "customer"


def test_rename(w):
    r = client_for(w.a_admin).post(url("tenant_rename", w.a_north.pk), {"name": "A Nord"})
    assert r.status_code == 302
    w.a_north.refresh_from_db()
    assert w.a_north.name == "A Nord"
    ev = AuditEvent.objects.get(action="tenant.renamed")
    assert ev.data == {"old_name": "A North", "new_name": "A Nord"}
    assert ev.actor_id == w.a_admin.pk
    assert ev.tenant_id == w.a_north.pk


def test_move_only_within_the_scope(w):
    # The customer admin may not move a site to the sibling customer: not a choice.
    client = client_for(w.a_admin)
    page = client.get(url("tenant_move", w.a_south.pk))
    assert list(page.context["form"].fields["parent"].queryset) == []
    r = client.post(url("tenant_move", w.a_south.pk), {"parent": w.cb.pk})
    assert r.status_code == 400
    w.a_south.refresh_from_db()
    assert w.a_south.parent_id == w.ca.pk
    # A location can be moved between sites of its customer.
    r = client.post(url("tenant_move", w.room.pk), {"parent": w.a_south.pk})
    assert r.status_code == 302
    w.room.refresh_from_db()
    assert w.room.parent_id == w.a_south.pk
    # The dealer admin manages sites of both customers and may move between them.
    dealer = client_for(w.d1_admin)
    choices = set(dealer.get(url("tenant_move", w.a_south.pk)).context["form"]
                  .fields["parent"].queryset.values_list("name", flat=True))
    assert choices == {"Customer B"}
    r = dealer.post(url("tenant_move", w.a_south.pk), {"parent": w.cb.pk})
    assert r.status_code == 302
    w.a_south.refresh_from_db()
    assert w.a_south.parent_id == w.cb.pk
    ev = AuditEvent.objects.filter(action="tenant.moved").latest("id")
    assert (ev.data["old_parent_id"], ev.data["new_parent_id"]) == (w.ca.pk, w.cb.pk)
    # ...after which the customer admin of A no longer sees it.
    assert client.get(url("tenant_detail", w.a_south.pk)).status_code == 404


def test_deactivate_and_reactivate(w):
    client = client_for(w.a_admin)
    confirm = client.get(url("tenant_deactivate", w.a_north.pk))
    assert confirm.status_code == 200
    w.a_north.refresh_from_db()
    assert w.a_north.is_active  # GET only asks
    r = client.post(url("tenant_deactivate", w.a_north.pk), {"reason": "closed"})
    assert r.status_code == 302
    w.a_north.refresh_from_db()
    w.room.refresh_from_db()
    assert not w.a_north.is_active
    assert not w.room.active_in_tree
    assert AuditEvent.objects.get(action="tenant.deactivated").data["reason"] == "closed"
    # The manager still sees it (to switch it back on), the viewer no longer does.
    assert client.get(url("tenant_detail", w.a_north.pk)).status_code == 200
    assert client_for(w.a_viewer).get(url("tenant_detail", w.a_north.pk)).status_code == 404
    html = client.get(url("site_list")).content.decode()
    assert "Deactivated" in html
    r = client.post(url("tenant_reactivate", w.a_north.pk))
    assert r.status_code == 302
    w.a_north.refresh_from_db()
    w.room.refresh_from_db()
    assert w.a_north.is_active
    assert w.room.active_in_tree
    assert AuditEvent.objects.filter(action="tenant.reactivated", actor=w.a_admin).count() == 1


def test_site_restricted_admin_cannot_reactivate_its_own_site(w):
    """Reactivating needs the managing permission on the parent (the customer), which an
    admin restricted to the site does not hold: the service says no, shown as a message."""
    client_for(w.a_admin).post(url("tenant_deactivate", w.a_north.pk), {})
    client = client_for(w.a_north_admin)
    r = client.post(url("tenant_reactivate", w.a_north.pk), follow=True)
    assert r.status_code == 200
    assert "You do not have permission to do this." in messages_of(r)
    w.a_north.refresh_from_db()
    assert not w.a_north.is_active
    assert not AuditEvent.objects.filter(action="tenant.reactivated").exists()
    client_for(w.a_admin).post(url("tenant_reactivate", w.a_north.pk))
    w.a_north.refresh_from_db()
    assert w.a_north.is_active


# --- profile ---------------------------------------------------------------------------------

def test_profile_lists_own_memberships_with_their_permissions(w):
    r = client_for(w.a_north_admin).get(url("profile"))
    assert r.status_code == 200
    rows = r.context["rows"]
    assert [(row["m"].tenant.name, row["role"]) for row in rows] == [
        ("Customer A", "Customer administrator")]
    assert [s.name for s in rows[0]["sites"]] == ["A North"]
    assert "Manage users and roles" in rows[0]["permissions"]
    html = r.content.decode()
    for name in ("account_change_password", "mfa_index", "usersessions_list", "set_language"):
        assert reverse(name) in html
    assert url("access_code_redeem") in html
    assert "Customer B" not in html
    assert_no_inline_code(html)


def test_profile_without_memberships(w):
    r = client_for(w.nobody).get(url("profile"))
    assert r.context["rows"] == []
    assert "You have no access to any tenant yet." in r.content.decode()


def test_pages_in_german(w):
    client = client_for(w.a_admin)
    try:
        client.post(reverse("set_language"), {"language": "de", "next": url("profile")})
        pages = {
            url("profile"): ["Ihre Zugänge", "Kunden-Administrator",
                             "Benutzer und Rollen verwalten"],
            url("user_list"): ["Neuer Benutzer", "Letzte Anmeldung"],
            url("site_list"): ["Standort", "Bereich"],
            url("access_code_create"): ["Neuer Zugangscode", "Höchstzahl der Einlösungen"],
            url("tenant_detail", w.ca.pk): ["Neuer Standort", "Personen mit Zugang hier"],
        }
        for path, expected in pages.items():
            r = client.get("/de" + path)
            assert r.status_code == 200, path
            html = r.content.decode()
            assert '<html lang="de">' in html
            for text in expected:
                assert text in html, (path, text)
    finally:
        translation.activate(settings.LANGUAGE_CODE)  # the requests left German active

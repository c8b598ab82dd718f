"""Administration pages for people: list, create with a set-password link, memberships,
custom roles, unlock, deactivate — and every way to hand out more than one holds."""

from __future__ import annotations

import re

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.core.cache import cache
from django.test import Client
from fleetroom.accounts import audit_events
from fleetroom.accounts.models import LockoutEvent, User
from fleetroom.accounts.testing import PASSWORD, assert_no_inline_code, post_login
from fleetroom.core.audit import verify_chain
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM, scope
from fleetroom.tenancy import services
from fleetroom.tenancy.models import Membership, Role
from fleetroom.tenancy.permissions import ROLE_PERMISSIONS, BuiltinRole, Permission

from server.tests.test_admin_support import (
    build_world,
    client_for,
    grant,
    local_input,
    messages_of,
    soon,
    url,
)

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a brand new long passphrase here"


@pytest.fixture
def w():
    cache.clear()  # allauth's per-address rate limits live in the cache
    yield build_world()
    cache.clear()


def link_in(response) -> str:
    match = re.search(r'<code id="set-password-link"[^>]*>([^<]+)</code>',
                      response.content.decode())
    assert match, "no set-password link on the page"
    return match.group(1)


def set_password_with(link: str, password: str) -> Client:
    """Use the link as the person would: open it, then submit the new password twice."""
    browser = Client()
    path = link.split("://", 1)[1].split("/", 1)[1]
    r = browser.get("/" + path)
    if r.status_code == 302:  # allauth moves the key into the session first
        form_url = r.headers["Location"]
        r = browser.post(form_url, {"password1": password, "password2": password})
    return browser, r


# --- list and detail -------------------------------------------------------------------------

def test_list_shows_people_in_scope_with_only_the_memberships_in_scope(w):
    grant(w.a_viewer, w.cb, "customer_viewer")  # also at the sibling customer
    r = client_for(w.a_admin).get(url("user_list"))
    assert r.status_code == 200
    rows = {row["u"].username: row for row in r.context["rows"]}
    assert set(rows) == {"a-admin", "a-viewer", "a-north-admin"}
    assert [x["m"].tenant.name for x in rows["a-viewer"]["memberships"]] == ["Customer A"]
    html = r.content.decode()
    assert "Customer B" not in html
    assert "b-admin" not in html
    assert_no_inline_code(html)


def test_list_shows_last_login_lock_and_mfa(w):
    post_login(Client(), "a-viewer", PASSWORD)
    for _ in range(5):
        post_login(Client(), "a-north-admin", "wrong wrong wrong wrong")
    r = client_for(w.d1_admin).get(url("user_list"))
    rows = {row["u"].username: row for row in r.context["rows"]}
    assert rows["a-viewer"]["u"].last_login is not None
    assert rows["d1-admin"]["u"].last_login is not None  # signed in to look at the list
    assert rows["b-admin"]["u"].last_login is None
    assert rows["a-north-admin"]["locked"] is True
    assert rows["a-viewer"]["locked"] is False
    assert rows["d1-admin"]["mfa"] is True
    assert rows["a-viewer"]["mfa"] is False
    assert {"d1-admin", "a-admin", "a-viewer", "b-admin"} <= set(rows)
    assert "z-admin" not in rows


def test_search_and_htmx_rows(w):
    client = client_for(w.a_admin)
    r = client.get(url("user_list"), {"q": "viktor"})
    assert [row["u"].username for row in r.context["rows"]] == ["a-viewer"]
    r = client.get(url("user_list"), {"q": "z-admin"})
    assert r.context["rows"] == []
    r = client.get(url("user_list"), {"q": "north"}, HTTP_HX_REQUEST="true",
                   HTTP_HX_TARGET="user-rows")
    assert r.content.decode().lstrip().startswith('<div id="user-rows">')
    assert "HX-Target" in r.headers["Vary"]
    # Going back in history (htmx restores the pushed URL) needs the whole page.
    r = client.get(url("user_list"), {"q": "north"}, HTTP_HX_REQUEST="true",
                   HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in r.content.decode()


def test_user_list_pages_keep_the_search(w):
    """The shared pagination links carry the search (``q``)."""
    for i in range(51):  # the user list shows 50 a page
        grant(User.objects.create_user(username=f"bulk-{i:02d}", email=f"bulk{i}@example.com"),
              w.ca, "customer_viewer")
    client = client_for(w.a_admin)
    html = client.get(url("user_list"), {"q": "bulk"}).content.decode()
    assert 'href="?q=bulk&amp;page=2" rel="next"' in html
    second = client.get(url("user_list"), {"q": "bulk", "page": "2"}).content.decode()
    assert 'href="?q=bulk&amp;page=1" rel="prev"' in second


def test_detail_shows_only_memberships_in_scope(w):
    grant(w.a_viewer, w.cb, "customer_admin")
    r = client_for(w.a_admin).get(url("user_detail", w.a_viewer.pk))
    assert [row["m"].tenant.name for row in r.context["memberships"]] == ["Customer A"]
    assert "Customer B" not in r.content.decode()


# --- creating people -------------------------------------------------------------------------

def test_create_user_gives_a_one_time_set_password_link(w):
    admin = client_for(w.a_admin)
    r = admin.post(url("user_create"), {
        "username": "newbie", "email": "newbie@example.com", "display_name": "New Bie",
        "tenant": w.ca.pk, "role": "builtin:customer_viewer", "sites": [w.a_south.pk]})
    assert r.status_code == 200
    assert "no-store" in r.headers["Cache-Control"]
    newbie = User.objects.get(username="newbie")
    assert (newbie.email, newbie.first_name) == ("newbie@example.com", "New Bie")
    assert not newbie.has_usable_password()
    m = Membership.objects.get(user=newbie)
    assert (m.tenant_id, m.role, m.site_restricted) == (w.ca.pk, "customer_viewer", True)
    assert list(m.sites.all()) == [w.a_south]
    link = link_in(r)
    assert "/accounts/password/reset/key/" in link
    # Audit: created on the customer's chain, granted, link issued (never the link itself).
    created = AuditEvent.objects.get(action="user.created")
    assert (created.tenant_id, created.actor_id) == (w.ca.pk, w.a_admin.pk)
    assert AuditEvent.objects.get(action="membership.granted", target_id=str(m.pk)).actor_id \
        == w.a_admin.pk
    issued = AuditEvent.objects.get(action="user.password_link_issued")
    assert issued.data == {"user_id": newbie.pk, "had_password": False}
    assert link.rsplit("-", 1)[-1].strip("/") not in str(issued.data)
    assert verify_chain() == []
    # The person sets a password and can sign in; the link then no longer works.
    _browser, r = set_password_with(link, NEW_PASSWORD)
    assert r.status_code == 302
    newbie.refresh_from_db()
    assert newbie.check_password(NEW_PASSWORD)
    browser = Client()
    post_login(browser, "newbie", NEW_PASSWORD)
    assert SESSION_KEY in browser.session
    _again, r = set_password_with(link, "yet another long passphrase 2")
    newbie.refresh_from_db()
    assert newbie.check_password(NEW_PASSWORD)
    assert r.status_code == 200
    assert r.context.get("token_fail")
    # The detail page never shows the link again.
    assert link not in admin.get(url("user_detail", newbie.pk)).content.decode()


def test_a_new_link_invalidates_an_unused_earlier_one(w):
    admin = client_for(w.a_admin)
    r = admin.post(url("user_create"), {
        "username": "late", "email": "late@example.com", "tenant": w.ca.pk,
        "role": "builtin:customer_viewer"})
    first = link_in(r)
    late = User.objects.get(username="late")
    second = link_in(admin.post(url("user_password_link", late.pk)))
    assert first != second
    _b, r = set_password_with(first, NEW_PASSWORD)
    late.refresh_from_db()
    assert not late.has_usable_password()
    _b, r = set_password_with(second, NEW_PASSWORD)
    late.refresh_from_db()
    assert late.check_password(NEW_PASSWORD)


def test_create_user_refuses_taken_names_and_rolls_back(w):
    r = client_for(w.a_admin).post(url("user_create"), {
        "username": "Z-ADMIN", "email": "someone@example.com", "tenant": w.ca.pk,
        "role": "builtin:customer_viewer"})
    assert r.status_code == 400
    assert "already exists" in r.content.decode()
    assert not User.objects.filter(email="someone@example.com").exists()


@pytest.mark.parametrize("change", [
    {"role": "builtin:dealer_admin"},             # a role the admin does not hold
    {"role": "builtin:operator_admin"},
    {"tenant": "cb"},                              # the sibling customer
    {"tenant": "d1"},                              # the dealer above
    {"sites": ["b_main"]},                         # a site of the sibling
    {"role": "custom:role_b"},                     # the sibling's custom role
])
def test_create_user_cannot_escalate(w, change):
    data = {"username": "sneaky", "email": "sneaky@example.com", "tenant": w.ca.pk,
            "role": "builtin:customer_viewer"}
    def resolve(key, value):
        if key == "tenant":
            return getattr(w, value).pk
        if key == "sites":
            return [getattr(w, v).pk for v in value]
        if value.startswith("custom:"):
            return f"custom:{getattr(w, value.split(':')[1]).pk}"
        return value

    data.update({key: resolve(key, value) for key, value in change.items()})
    r = client_for(w.a_admin).post(url("user_create"), data)
    assert r.status_code == 400
    assert not User.objects.filter(username="sneaky").exists()
    assert not AuditEvent.objects.filter(action="user.created").exists()


def test_service_refuses_what_the_form_offers_only_elsewhere(w):
    """A role offered because the admin holds it on one site is refused for the whole
    customer: the service checks the exact place and the page says why."""
    # a-admin holds customer_admin on A; give it technician rights on A North only.
    tech_site = services.do_create_role(w.a_north, "Site tech",
                                        sorted(ROLE_PERMISSIONS[BuiltinRole.DEALER_TECHNICIAN]),
                                        acting_user=SYSTEM)
    services.do_grant_membership(w.a_admin, w.a_north, acting_user=SYSTEM,
                                 custom_role=tech_site)
    client = client_for(w.a_admin)
    form = client.get(url("user_create")).context["form"]
    offered = [v for _group, opts in form.fields["role"].choices[1:] for v, _l in opts]
    assert "builtin:dealer_technician" in offered
    base = {"username": "tech", "email": "tech@example.com",
            "role": "builtin:dealer_technician"}
    r = client.post(url("user_create"), {**base, "tenant": w.ca.pk})
    assert r.status_code == 400
    assert ("You can only grant permissions you hold yourself, on tenants and sites you "
            "manage.") in r.content.decode()
    assert not User.objects.filter(username="tech").exists()
    r = client.post(url("user_create"), {**base, "tenant": w.ca.pk, "sites": [w.a_north.pk]})
    assert r.status_code == 200
    m = Membership.objects.get(user__username="tech")
    assert m.site_restricted
    assert list(m.sites.all()) == [w.a_north]


# --- memberships -----------------------------------------------------------------------------

def test_grant_change_revoke(w):
    client = client_for(w.a_admin)
    r = client.post(url("membership_grant", w.a_viewer.pk), {
        "tenant": w.a_north.pk, "role": "builtin:customer_admin",
        "expires_at": local_input(soon(30))})
    assert r.status_code == 302
    m = Membership.objects.get(user=w.a_viewer, tenant=w.a_north)
    assert m.role == "customer_admin"
    assert m.expires_at is not None
    assert scope(w.a_viewer, Permission.MANAGE_USERS).prefixes == (w.a_north.path,)
    r = client.post(url("membership_change", m.pk), {"role": f"custom:{w.role_a.pk}",
                                                     "sites": [w.room.pk]})
    assert r.status_code == 302
    m.refresh_from_db()
    assert (m.role, m.custom_role_id, m.site_restricted) == ("", w.role_a.pk, True)
    assert list(m.sites.all()) == [w.room]
    changed = AuditEvent.objects.get(action="membership.changed")
    assert changed.data["before"]["role"] == "customer_admin"
    assert changed.data["after"]["custom_role_id"] == w.role_a.pk
    assert changed.actor_id == w.a_admin.pk
    confirm = client.get(url("membership_revoke", m.pk))
    assert confirm.status_code == 200
    assert Membership.objects.filter(pk=m.pk).exists()
    r = client.post(url("membership_revoke", m.pk))
    assert r.status_code == 302
    assert not Membership.objects.filter(pk=m.pk).exists()
    revoked = AuditEvent.objects.get(action="membership.revoked")
    assert revoked.data["membership_id"] == m.pk
    assert verify_chain() == []


def test_duplicate_grant_is_a_message_on_the_form(w):
    r = client_for(w.a_admin).post(url("membership_grant", w.a_viewer.pk), {
        "tenant": w.ca.pk, "role": "builtin:customer_admin"})
    assert r.status_code == 400
    assert "This user already has access here; change that membership instead." \
        in r.content.decode()
    assert w.membership(w.a_viewer, w.ca).role == "customer_viewer"


def test_change_keeps_the_role_when_asked_to(w):
    m = w.membership(w.a_viewer, w.ca)
    r = client_for(w.a_admin).post(url("membership_change", m.pk),
                                   {"role": "", "sites": [w.a_north.pk]})
    assert r.status_code == 302
    m.refresh_from_db()
    assert m.role == "customer_viewer"
    assert list(m.sites.all()) == [w.a_north]


def test_site_restricted_admin_cannot_widen_or_touch_broader_memberships(w):
    client = client_for(w.a_north_admin)
    # The viewer's membership covers all of Customer A: broader than the admin's scope.
    assert client.get(url("membership_change", w.membership(w.a_viewer, w.ca).pk)) \
        .status_code == 404
    # A membership the admin granted on its site cannot be widened to the customer.
    newbie = client.post(url("user_create"), {
        "username": "sitey", "email": "sitey@example.com", "tenant": w.a_north.pk,
        "role": "builtin:customer_viewer"})
    assert newbie.status_code == 200
    sitey = User.objects.get(username="sitey")
    r = client.post(url("membership_grant", sitey.pk), {
        "tenant": w.ca.pk, "role": "builtin:customer_viewer"})
    assert r.status_code == 400  # Customer A is not a choice
    assert Membership.objects.filter(user=sitey).count() == 1


def test_admin_cannot_escalate_own_membership(w):
    """Changing one's own membership to a role one does not hold is refused."""
    m = w.membership(w.a_admin, w.ca)
    r = client_for(w.a_admin).post(url("membership_change", m.pk),
                                   {"role": "builtin:dealer_admin"})
    assert r.status_code == 400
    m.refresh_from_db()
    assert m.role == "customer_admin"


# --- account state ---------------------------------------------------------------------------

def test_unlock_a_locked_user(w):
    for _ in range(5):
        post_login(Client(), "a-viewer", "wrong wrong wrong wrong")
    browser = Client()
    post_login(browser, "a-viewer", PASSWORD)
    assert SESSION_KEY not in browser.session  # locked
    client = client_for(w.a_admin)
    page = client.get(url("user_detail", w.a_viewer.pk))
    assert page.context["login_lock"] is not None
    assert url("user_unlock", w.a_viewer.pk) in page.content.decode()
    r = client.post(url("user_unlock", w.a_viewer.pk), follow=True)
    assert "The account was unlocked." in messages_of(r)
    assert not LockoutEvent.objects.filter(username="a-viewer", lifted_at__isnull=True).exists()
    assert not AccessAttempt.objects.filter(username="a-viewer").exists()
    ev = AuditEvent.objects.get(action=audit_events.UNLOCKED)
    assert ev.actor_id == w.a_admin.pk
    assert ev.target_id == str(w.a_viewer.pk)
    cache.clear()
    browser = Client()
    post_login(browser, "a-viewer", PASSWORD)
    assert SESSION_KEY in browser.session


def test_unlock_lifts_an_access_code_lockout_too(w):
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017 - ValidationError each time
            services.do_redeem_access_code(w.a_viewer, "AAAA-BBBB-CCCC-DDDD", None)
    assert services.access_code_lockout_keys(w.a_viewer)
    client = client_for(w.a_admin)
    assert client.get(url("user_detail", w.a_viewer.pk)).context["code_locked"] is True
    client.post(url("user_unlock", w.a_viewer.pk))
    assert services.access_code_lockout_keys(w.a_viewer) == []
    ev = AuditEvent.objects.get(action="access_code.unlocked")
    assert ev.data["user_id"] == w.a_viewer.pk


def test_unlock_refused_for_someone_with_access_beyond_the_admin(w):
    """a-viewer also works for Customer B: the admin of A cannot unlock the account."""
    grant(w.a_viewer, w.cb, "customer_viewer")
    for _ in range(5):
        post_login(Client(), "a-viewer", "wrong wrong wrong wrong")
    r = client_for(w.a_admin).post(url("user_unlock", w.a_viewer.pk), follow=True)
    assert "You may not change this account." in messages_of(r)
    assert LockoutEvent.objects.filter(username="a-viewer", lifted_at__isnull=True).exists()
    assert not AuditEvent.objects.filter(action=audit_events.UNLOCKED).exists()
    # ...the dealer admin, who manages both customers, can.
    client_for(w.d1_admin).post(url("user_unlock", w.a_viewer.pk))
    assert not LockoutEvent.objects.filter(username="a-viewer", lifted_at__isnull=True).exists()


def test_deactivate_and_reactivate(w):
    client = client_for(w.a_admin)
    victim = client_for(w.a_viewer)
    assert client.get(url("user_deactivate", w.a_viewer.pk)).status_code == 200
    r = client.post(url("user_deactivate", w.a_viewer.pk), {"reason": "left the company"})
    assert r.status_code == 302
    w.a_viewer.refresh_from_db()
    assert not w.a_viewer.is_active
    assert w.a_viewer.deactivated_at is not None
    ev = AuditEvent.objects.get(action=audit_events.DEACTIVATED)
    assert ev.data["reason"] == "left the company"
    assert ev.actor_id == w.a_admin.pk
    assert victim.get(url("profile")).status_code == 302  # the session is gone
    client.post(url("user_reactivate", w.a_viewer.pk))
    w.a_viewer.refresh_from_db()
    assert w.a_viewer.is_active
    assert w.a_viewer.deactivated_at is None
    assert AuditEvent.objects.filter(action=audit_events.REACTIVATED).count() == 1


def test_cannot_deactivate_oneself_or_a_broader_colleague(w):
    client = client_for(w.a_admin)
    r = client.post(url("user_deactivate", w.a_admin.pk), follow=True)
    assert "You cannot deactivate your own account." in messages_of(r)
    w.a_admin.refresh_from_db()
    assert w.a_admin.is_active
    # The dealer admin's membership (on the dealer) is out of the customer admin's scope.
    assert client.post(url("user_deactivate", w.d1_admin.pk)).status_code == 404
    w.d1_admin.refresh_from_db()
    assert w.d1_admin.is_active


# --- custom roles ----------------------------------------------------------------------------

def test_create_and_edit_a_custom_role(w):
    client = client_for(w.a_admin)
    page = client.get(url("role_create"))
    offered = {v for v, _l in page.context["form"].fields["permissions"].choices}
    assert offered == set(ROLE_PERMISSIONS[BuiltinRole.CUSTOMER_ADMIN])
    r = client.post(url("role_create"), {"tenant": w.ca.pk, "name": "Ticket desk",
                                         "permissions": ["view_fleet", "manage_tickets"]})
    assert r.status_code == 302
    role = Role.objects.get(name="Ticket desk")
    assert (role.tenant_id, role.permissions) == (w.ca.pk, ["manage_tickets", "view_fleet"])
    created = AuditEvent.objects.get(action="role.created", actor=w.a_admin)
    assert created.data["permissions"] == ["manage_tickets", "view_fleet"]
    listing = client.get(url("role_list"))
    assert {row["r"].name for row in listing.context["rows"]} == {"A readers", "Ticket desk"}
    r = client.post(url("role_edit", role.pk), {"name": "Service desk",
                                                "permissions": ["view_fleet"]})
    assert r.status_code == 302
    role.refresh_from_db()
    assert (role.name, role.permissions) == ("Service desk", ["view_fleet"])
    ev = AuditEvent.objects.get(action="role.changed")
    assert ev.data["old_name"] == "Ticket desk"


@pytest.mark.parametrize("data", [
    {"tenant": "ca", "name": "Agents", "permissions": ["view_fleet", "manage_agents"]},
    {"tenant": "ca", "name": "Platform", "permissions": ["manage_platform"]},
    {"tenant": "cb", "name": "Sibling", "permissions": ["view_fleet"]},
    {"tenant": "d1", "name": "Dealer", "permissions": ["view_fleet"]},
])
def test_custom_role_cannot_escalate(w, data):
    data = {**data, "tenant": getattr(w, data["tenant"]).pk}
    r = client_for(w.a_admin).post(url("role_create"), data)
    assert r.status_code == 400
    assert not Role.objects.filter(name=data["name"]).exists()


def test_role_with_rights_beyond_the_admin_cannot_be_edited_by_it(w):
    """A role the dealer defined on Customer A with agent rights: the customer admin sees
    it (it is on A) but cannot change it, because it could not grant it."""
    broad = services.do_create_role(w.ca, "Installer", ["view_fleet", "manage_agents"],
                                    acting_user=SYSTEM)
    r = client_for(w.a_admin).post(url("role_edit", broad.pk),
                                   {"name": "Installer", "permissions": ["view_fleet"]})
    assert r.status_code == 400
    broad.refresh_from_db()
    assert broad.permissions == ["manage_agents", "view_fleet"]


def test_no_set_password_link_for_an_sso_account(w):
    """Someone who signs in through the directory has no password here; a link would
    only lead to the reset form's refusal, so none is made."""
    from fleetroom.accounts.models import ExternalIdentity

    ExternalIdentity.objects.create(kind="ldap", provider="ldap", subject="uid=viktor",
                                    user=w.a_viewer)
    client = client_for(w.a_admin)
    page = client.get(url("user_detail", w.a_viewer.pk)).content.decode()
    assert url("user_password_link", w.a_viewer.pk) not in page
    r = client.post(url("user_password_link", w.a_viewer.pk), follow=True)
    assert ("This person signs in through their organisation and has no password here."
            in messages_of(r))
    assert not AuditEvent.objects.filter(action="user.password_link_issued").exists()

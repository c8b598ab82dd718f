"""Access-code pages: create (never more than the creator holds), shown exactly once,
list, revoke, and redeem (exactly the restricted membership; one message for every
bad code; lockout)."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from fleetroom.accounts.testing import assert_no_inline_code
from fleetroom.core.audit import verify_chain
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM, scope
from fleetroom.tenancy import access_codes, services
from fleetroom.tenancy.models import AccessCode, Membership
from fleetroom.tenancy.permissions import Permission

from server.tests.test_admin_support import (
    build_world,
    client_for,
    local_input,
    messages_of,
    soon,
    url,
)

pytestmark = pytest.mark.django_db

INVALID = str(services.INVALID_CODE)
LOCKED = str(services.LOCKED_OUT)


@pytest.fixture
def w():
    return build_world()


def code_in(response) -> str:
    match = re.search(r'<code id="access-code"[^>]*>([^<]+)</code>', response.content.decode())
    assert match, "no code on the page"
    return match.group(1)


def create(client, w, **overrides):
    data = {"tenant": w.ca.pk, "label": "For the auditor", "permissions": ["view_fleet"],
            "expires_at": local_input(soon(7)), "max_uses": 1}
    data.update(overrides)
    return client.post(url("access_code_create"), data)


# --- create and show once --------------------------------------------------------------------

def test_code_is_shown_exactly_once(w):
    client = client_for(w.a_admin)
    r = create(client, w, permissions=["view_fleet", "view_reports"], sites=[w.a_north.pk],
               max_uses=3, membership_expires_at=local_input(soon(30)))
    assert r.status_code == 200
    assert "no-store" in r.headers["Cache-Control"]
    text = code_in(r)
    code = AccessCode.objects.exclude(pk__in=[w.code_a.pk, w.code_b.pk, w.code_z.pk]).get()
    assert access_codes.parse(text)[0] == code.lookup_id
    assert code.permissions == ["view_fleet", "view_reports"]
    assert code.site_restricted
    assert list(code.sites.all()) == [w.a_north]
    assert (code.max_uses, code.label, code.created_by_id) == (3, "For the auditor",
                                                               w.a_admin.pk)
    assert code.membership_expires_at is not None
    assert_no_inline_code(r.content.decode())
    secret = text.replace("-", "")[access_codes.LOOKUP_LEN:]
    assert secret not in code.secret_hash
    ev = AuditEvent.objects.get(action="access_code.created", actor=w.a_admin,
                                target_id=str(code.pk))
    assert secret not in str(ev.data)
    assert text not in str(ev.data)
    # Never again: not in the list, not on any other page, not in the session.
    for page in (url("access_code_list"), url("access_code_revoke", code.pk),
                 url("access_code_create")):
        html = client.get(page).content.decode()
        assert text not in html
        assert secret not in html
    assert secret not in str(dict(client.session.items()))


def test_list_shows_state_uses_expiry_and_scope_in_scope_only(w):
    client = client_for(w.a_admin)
    create(client, w, sites=[w.a_south.pk], label="South")
    revoked, _ = services.do_create_access_code(w.a_admin, w.ca, ["view_fleet"], None, soon())
    services.do_revoke_access_code(revoked, acting_user=SYSTEM)
    r = client.get(url("access_code_list"))
    rows = {row["c"].pk: row for row in r.context["rows"]}
    assert set(rows) == set(AccessCode.objects.filter(tenant=w.ca).values_list("pk", flat=True))
    assert w.code_b.pk not in rows
    assert w.code_z.pk not in rows
    assert str(rows[revoked.pk]["status"]) == "Revoked"
    assert not rows[revoked.pk]["can_revoke"]
    assert str(rows[w.code_a.pk]["status"]) == "Active"
    south = next(row for row in rows.values() if row["c"].label == "South")
    assert [s.name for s in south["sites"]] == ["A South"]
    assert south["permissions"] == ["View fleet"]
    html = r.content.decode()
    assert "0 / 1" in html
    assert "Customer B" not in html


def test_expired_and_used_up_states(w):
    used, text = services.do_create_access_code(w.a_admin, w.ca, ["view_fleet"], None, soon())
    services.do_redeem_access_code(w.nobody, text, None)
    AccessCode.objects.filter(pk=w.code_a.pk).update(expires_at=timezone.now())
    rows = {row["c"].pk: row for row in
            client_for(w.a_admin).get(url("access_code_list")).context["rows"]}
    assert str(rows[used.pk]["status"]) == "Used up"
    assert str(rows[w.code_a.pk]["status"]) == "Expired"


@pytest.mark.parametrize("overrides", [
    {"permissions": ["view_fleet", "manage_agents"]},   # a permission the creator lacks
    {"permissions": ["manage_platform"]},
    {"tenant": "cb"},                                    # the sibling customer
    {"tenant": "d1"},                                    # the dealer above
    {"sites": ["b_main"]},                               # a site of the sibling
    {"max_uses": 0},
    {"max_uses": 1001},
    {"expires_at": "past"},
    {"expires_at": "too_far"},
])
def test_create_cannot_escalate_or_break_limits(w, overrides):
    def resolve(key, value):
        if key == "tenant":
            return getattr(w, value).pk
        if key == "sites":
            return [getattr(w, v).pk for v in value]
        if value == "past":
            return local_input(timezone.now() - timezone.timedelta(hours=1))
        if value == "too_far":
            return local_input(soon(91))
        return value

    resolved = {key: resolve(key, value) for key, value in overrides.items()}
    before = AccessCode.objects.count()
    r = create(client_for(w.a_admin), w, **resolved)
    assert r.status_code == 400
    assert AccessCode.objects.count() == before
    assert 'id="access-code"' not in r.content.decode()


def test_service_refuses_a_code_broader_than_where_the_creator_holds_it(w):
    """The creator holds manage_agents only on A North: offered on the form, but a code
    for all of Customer A with it is refused by the service, with its message."""
    role = services.do_create_role(w.a_north, "Site installer",
                                   ["view_fleet", "manage_agents"], acting_user=SYSTEM)
    services.do_grant_membership(w.a_admin, w.a_north, acting_user=SYSTEM, custom_role=role)
    client = client_for(w.a_admin)
    offered = {v for v, _l in client.get(url("access_code_create")).context["form"]
               .fields["permissions"].choices}
    assert "manage_agents" in offered
    assert "manage_platform" not in offered
    before = AccessCode.objects.count()
    r = create(client, w, permissions=["manage_agents"])
    assert r.status_code == 400
    assert ("You can only grant permissions you hold yourself, on tenants and sites you "
            "manage.") in r.content.decode()
    assert AccessCode.objects.count() == before
    r = create(client, w, permissions=["manage_agents"], sites=[w.a_north.pk])
    assert r.status_code == 200
    assert AccessCode.objects.count() == before + 1


def test_site_restricted_admin_offers_only_its_sites(w):
    form = client_for(w.a_north_admin).get(url("access_code_create")).context["form"]
    assert {t.name for t in form.fields["tenant"].queryset} == {"A North", "Room 1"}
    assert {t.name for t in form.fields["sites"].queryset} == {"A North", "Room 1"}


def test_sites_follow_the_chosen_tenant(w):
    """What htmx asks for when the tenant select changes: the sites of that tenant."""
    r = client_for(w.d1_admin).get(url("access_code_create"), {"tenant": w.cb.pk},
                                   HTTP_HX_REQUEST="true")
    assert [t.name for t in r.context["form"].fields["sites"].queryset] == ["B Main"]
    assert f'hx-get="{url("access_code_create")}"' in r.content.decode()


# --- revoke ----------------------------------------------------------------------------------

def test_revoke_and_optionally_end_the_access_it_granted(w):
    code, text = services.do_create_access_code(w.a_admin, w.ca, ["view_fleet"], None, soon(),
                                                max_uses=2)
    services.do_redeem_access_code(w.nobody, text, None)
    client = client_for(w.a_admin)
    assert client.get(url("access_code_revoke", code.pk)).status_code == 200
    code.refresh_from_db()
    assert code.revoked_at is None  # GET only asks
    r = client.post(url("access_code_revoke", code.pk), {"revoke_memberships": "on"},
                    follow=True)
    assert "The code was revoked." in messages_of(r)
    code.refresh_from_db()
    assert code.revoked_at is not None
    assert code.revoked_by_id == w.a_admin.pk
    assert not Membership.objects.filter(via_access_code=code).exists()
    ev = AuditEvent.objects.get(action="access_code.revoked")
    assert ev.data == {"lookup_id": code.lookup_id, "memberships_revoked": 1}
    assert ev.actor_id == w.a_admin.pk
    # Redeeming it now gives the one message for every bad code.
    r = client_for(w.z_viewer).post(url("access_code_redeem"), {"code": text})
    assert r.status_code == 400
    assert INVALID in r.content.decode()


def test_revoke_keeps_granted_access_unless_asked(w):
    code, text = services.do_create_access_code(w.a_admin, w.ca, ["view_fleet"], None, soon())
    services.do_redeem_access_code(w.nobody, text, None)
    client_for(w.a_admin).post(url("access_code_revoke", code.pk), {})
    assert Membership.objects.filter(via_access_code=code).count() == 1


# --- redeem ----------------------------------------------------------------------------------

def test_redeem_creates_exactly_the_restricted_membership(w):
    code, text = services.do_create_access_code(
        w.a_admin, w.ca, ["view_fleet", "view_reports"], [w.a_north], soon(),
        membership_expires_at=soon(30))
    client = client_for(w.nobody)
    page = client.get(url("access_code_redeem"))
    assert page.status_code == 200
    assert_no_inline_code(page.content.decode())
    typed = text.lower().replace("-", " ")
    r = client.post(url("access_code_redeem"), {"code": typed}, follow=True)
    assert r.redirect_chain[-1][0] == url("profile")
    assert "You now have access to Customer A." in messages_of(r)
    m = Membership.objects.get(user=w.nobody)
    assert (m.tenant_id, m.via_access_code_id, m.role, m.custom_role_id) == (
        w.ca.pk, code.pk, "", None)
    assert m.permissions == ["view_fleet", "view_reports"]
    assert m.site_restricted
    assert list(m.sites.all()) == [w.a_north]
    assert m.expires_at == code.membership_expires_at
    assert scope(w.nobody, Permission.VIEW_FLEET).prefixes == (w.a_north.path,)
    assert scope(w.nobody, Permission.EDIT_DEVICES).is_empty
    code.refresh_from_db()
    assert code.use_count == 1
    ev = AuditEvent.objects.get(action="access_code.redeemed")
    assert ev.actor_id == w.nobody.pk
    assert ev.data["membership_id"] == m.pk
    assert ev.ip == "127.0.0.1"
    # The profile shows it; the tree now shows the site (and only it).
    assert [row["m"].pk for row in r.context["rows"]] == [m.pk]
    names = [row["tenant"].name for row in client.get(url("site_list"))
             .context["page"].object_list]
    assert names == ["A North", "Room 1"]
    assert verify_chain() == []


def test_bad_codes_all_get_one_message_and_lock_out(w):
    revoked, revoked_text = services.do_create_access_code(w.a_admin, w.ca, ["view_fleet"],
                                                           None, soon())
    services.do_revoke_access_code(revoked, acting_user=SYSTEM)
    _good, good_text = services.do_create_access_code(w.a_admin, w.ca, ["view_fleet"], None,
                                                      soon())
    unknown = "ZZZZ-" + good_text[5:]
    client = client_for(w.nobody)
    answers = set()
    for text in ("nonsense", unknown, revoked_text, good_text[:-1] + "X", "ABCD"):
        r = client.post(url("access_code_redeem"), {"code": text})
        assert r.status_code == 400
        html = r.content.decode()
        answers.add(re.search(r'<ul class="errorlist"[^>]*>(.*?)</ul>', html, re.S).group(1))
    assert len(answers) == 1
    assert INVALID in answers.pop()
    # The sixth try, with a good code, is refused by the lockout.
    r = client.post(url("access_code_redeem"), {"code": good_text})
    assert r.status_code == 400
    assert LOCKED in r.content.decode()
    assert not Membership.objects.filter(user=w.nobody).exists()
    assert AuditEvent.objects.filter(action="access_code.locked_out").exists()
    reasons = sorted(AuditEvent.objects.filter(action="access_code.failed", actor=w.nobody)
                     .values_list("data__reason", flat=True))
    assert "revoked" in reasons
    assert "locked_out" in reasons


def test_redeem_form_is_csrf_protected_and_needs_login(w):
    r = client_for(w.nobody, enforce_csrf_checks=True).post(url("access_code_redeem"),
                                                            {"code": "x"})
    assert r.status_code == 403
    r = client_for(None).post(url("access_code_redeem"), {"code": "x"})
    assert r.status_code == 302
    assert not AuditEvent.objects.filter(action="access_code.failed").exists()

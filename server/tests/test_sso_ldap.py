"""Directory login against a real OpenLDAP slapd on loopback, through the real login form.

Nothing is mocked: the test starts its own slapd (tests/support/slapd.py) with a
tree of people and groups — one of each with a non-ASCII name — and logs in with
Django's test client exactly as a browser posts the form.  Covered: first login
creates the user with the mapped membership and attributes; later logins follow
the directory (renames, group changes, removal); wrong passwords count toward the
lockout; MFA still applies; an existing local account is never taken over; an
SSO account has no local password; StartTLS and ldaps:// with a CA file.

In CI (CI=true) a missing slapd fails the suite; elsewhere these tests skip.
"""

from __future__ import annotations

from types import SimpleNamespace

import ldap
import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import SESSION_KEY
from django.core import mail
from django.core.cache import cache
from django.test import Client, RequestFactory
from django.urls import reverse
from fleetroom.accounts import audit_events
from fleetroom.accounts import services as account_services
from fleetroom.accounts.models import ExternalIdentity, ExternalMembership, LockoutEvent, User
from fleetroom.accounts.services import ApiAuthenticationFailed
from fleetroom.accounts.sso import services as sso_services
from fleetroom.accounts.sso.conf import LDAP_BACKEND, LOCKOUT_BACKEND
from fleetroom.accounts.testing import (
    PASSWORD,
    enable_totp,
    make_user,
    post_code,
    post_login,
    stored_totp_secret,
    totp_code,
)
from fleetroom.config import LdapConfig, SsoConfig
from fleetroom.core.models import AuditEvent
from fleetroom.tenancy.models import Membership

from tests.support.slapd import GROUPS, SERVICE_DN, SERVICE_PASSWORD, Slapd, find_slapd, other_ca
from tests.support.sso import IN_CI, apply_sso, make_tenants

pytestmark = pytest.mark.django_db

ALICE_PW = "alice's directory password"
BOB_PW = "bob's directory password"
JUERGEN_PW = "Jürgens Verzeichnispasswort"
WRONG = "definitely not the right password"


@pytest.fixture(scope="module")
def slapd():
    binary = find_slapd()
    if binary is None:
        if IN_CI:
            pytest.fail("slapd is missing in CI: install Debian's slapd package")
        pytest.skip("slapd not found: install Debian's slapd (scripts/setup.sh does) to run "
                    "the LDAP tests")
    with Slapd(binary) as server:
        yield server


@pytest.fixture
def directory(slapd):
    """A fresh tree: alice (admins + viewers), bob (viewers), jürgen (Geschäftsführung)."""
    slapd.load_tree()
    d = SimpleNamespace(server=slapd)
    d.alice = slapd.add_person("alice", ALICE_PW, given_name="Alice", surname="Archer",
                               mail="alice@example.org")
    d.bob = slapd.add_person("bob", BOB_PW, given_name="Bob", surname="Baker",
                             mail="bob@example.org")
    d.juergen = slapd.add_person("jürgen", JUERGEN_PW, given_name="Jürgen", surname="Müller",
                                 mail="juergen@example.org")
    d.admins = slapd.add_group("fleet-admins", [d.alice])
    d.viewers = slapd.add_group("fleet-viewers", [d.alice, d.bob])
    d.management = slapd.add_group("Geschäftsführung", [d.juergen])
    return d


@pytest.fixture
def tenants(db):
    return make_tenants()


def ldap_config(slapd: Slapd, tenants, **overrides) -> LdapConfig:
    values = {
        "server_uri": slapd.uri,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "user_search_base": "ou=people,dc=example,dc=org",
        "user_search_filter": "(|(uid=%(user)s)(mail=%(user)s))",
        "group_search_base": GROUPS,
        "timeout_seconds": 5,
        "groups": [
            # The stronger role first: alice is in both groups for Customer 1.
            {"group": f"cn=fleet-admins,{GROUPS}", "tenant": "Dealer A/Customer 1",
             "role": "customer_admin"},
            {"group": f"CN=fleet-viewers, {GROUPS}", "tenant": "Dealer A/Customer 1",
             "role": "customer_viewer"},
            {"group": f"cn=Geschäftsführung,{GROUPS}", "tenant": tenants["c2"].pk,
             "role": "customer_admin"},
        ],
    }
    values.update(overrides)
    return LdapConfig.model_validate(values)


@pytest.fixture
def sso(settings, directory, tenants):
    """LDAP configured as settings.py would configure it from [sso.ldap]."""
    apply_sso(settings, SsoConfig(ldap=ldap_config(directory.server, tenants)))
    return SimpleNamespace(settings=settings, directory=directory, tenants=tenants)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def logged_in(client) -> bool:
    return SESSION_KEY in client.session


def membership(user, tenant):
    return Membership.objects.filter(user=user, tenant=tenant).first()


def actions(action: str, **data) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(action=action).order_by("seq")
    return [e for e in events if all(e.data.get(k) == v for k, v in data.items())]


# --- configuration wiring ---------------------------------------------------------------

def test_backend_is_added_after_the_lockout_backend_only_when_configured(sso, settings):
    backends = settings.AUTHENTICATION_BACKENDS
    assert backends[0] == LOCKOUT_BACKEND
    assert backends[-1] == LDAP_BACKEND
    assert settings.AUTH_LDAP_BIND_PASSWORD == SERVICE_PASSWORD
    apply_sso(settings, SsoConfig())
    assert LDAP_BACKEND not in settings.AUTHENTICATION_BACKENDS


# --- first and later logins -------------------------------------------------------------

def test_first_login_creates_the_user_with_mapped_membership_and_attributes(sso):
    d, t = sso.directory, sso.tenants
    client = Client()
    response = post_login(client, "alice", ALICE_PW)
    assert response.status_code == 302, response.text
    assert logged_in(client)
    alice = User.objects.get(username="alice")
    assert (alice.first_name, alice.last_name, alice.email) == (
        "Alice", "Archer", "alice@example.org")
    assert not alice.has_usable_password()
    identity = ExternalIdentity.objects.get(user=alice)
    assert (identity.kind, identity.provider) == ("ldap", "ldap")
    assert identity.subject == d.server.entry_uuid(d.alice)  # entryUUID, not the DN
    assert identity.tenant == t["c1"]
    # In both mapped groups for Customer 1: the first mapping (the stronger role) wins.
    m = membership(alice, t["c1"])
    assert m.role == "customer_admin"
    assert ExternalMembership.objects.get(membership=m).source == f"cn=fleet-admins,{GROUPS}"
    assert not Membership.objects.filter(user=alice).exclude(pk=m.pk).exists()
    # Audited: the account (platform chain), the grant by the system (tenant chain).
    assert actions(audit_events.SSO_USER_CREATED, provider="ldap", subject=identity.subject)
    [grant] = AuditEvent.objects.filter(action="membership.granted", tenant=t["c1"])
    assert grant.actor_label == "system"
    assert actions(audit_events.LOGIN_SUCCEEDED)


def test_non_ascii_names_and_login_by_email(sso):
    t = sso.tenants
    client = Client()
    response = post_login(client, "juergen@example.org", JUERGEN_PW)
    assert response.status_code == 302, response.text
    juergen = User.objects.get(email="juergen@example.org")
    assert juergen.username == "jürgen"
    assert (juergen.first_name, juergen.last_name) == ("Jürgen", "Müller")
    assert membership(juergen, t["c2"]).role == "customer_admin"  # cn=Geschäftsführung, by id
    assert ExternalIdentity.objects.get(user=juergen).last_seen_as.startswith("uid=jürgen,")
    client.logout()
    assert post_login(client, "jürgen", JUERGEN_PW).status_code == 302
    assert logged_in(client)
    assert User.objects.filter(email="juergen@example.org").count() == 1


def test_later_logins_follow_the_directory(sso):
    d, t = sso.directory, sso.tenants
    client = Client()
    post_login(client, "alice", ALICE_PW)
    alice = User.objects.get(username="alice")
    client.logout()
    # Renamed and moved in the directory: still the same person (same entryUUID).
    d.server.modify(d.alice, [(ldap.MOD_REPLACE, "sn", ["Archer-Smith"]),
                              (ldap.MOD_REPLACE, "mail", ["a.smith@example.org"])])
    d.server.rename(d.alice, "uid=alicia")
    alicia = d.alice.replace("uid=alice", "uid=alicia")
    d.server.modify(d.admins, [(ldap.MOD_DELETE, "member", [d.alice]),
                               (ldap.MOD_ADD, "member", [alicia])])
    d.server.modify(d.viewers, [(ldap.MOD_DELETE, "member", [d.alice]),
                                (ldap.MOD_ADD, "member", [alicia])])
    assert post_login(client, "alicia", ALICE_PW).status_code == 302
    alice.refresh_from_db()
    assert (alice.username, alice.last_name, alice.email) == (
        "alicia", "Archer-Smith", "a.smith@example.org")
    assert User.objects.count() == 1
    assert actions(audit_events.SSO_USER_UPDATED)
    # Out of the admins group: the role falls back to the viewers group's.
    client.logout()
    d.server.remove_from_group(d.admins, alicia)
    assert post_login(client, "alicia", ALICE_PW).status_code == 302
    assert membership(alice, t["c1"]).role == "customer_viewer"
    assert AuditEvent.objects.filter(action="membership.changed", tenant=t["c1"]).exists()


def test_removed_from_group_loses_the_membership_at_next_login(sso):
    d, t = sso.directory, sso.tenants
    client = Client()
    post_login(client, "bob", BOB_PW)
    bob = User.objects.get(username="bob")
    assert membership(bob, t["c1"]).role == "customer_viewer"
    client.logout()
    d.server.remove_from_group(d.viewers, d.bob)
    assert post_login(client, "bob", BOB_PW).status_code == 302
    assert membership(bob, t["c1"]) is None
    [revoked] = AuditEvent.objects.filter(action="membership.revoked", tenant=t["c1"])
    assert revoked.actor_label == "system"
    assert not ExternalMembership.objects.exists()


def test_memberships_granted_by_hand_are_left_alone(sso):
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.tenancy import services as tenancy_services

    d, t = sso.directory, sso.tenants
    client = Client()
    post_login(client, "bob", BOB_PW)
    bob = User.objects.get(username="bob")
    tenancy_services.do_grant_membership(bob, t["s11"], acting_user=SYSTEM,
                                         role="customer_viewer")
    client.logout()
    d.server.remove_from_group(d.viewers, d.bob)
    post_login(client, "bob", BOB_PW)
    assert membership(bob, t["c1"]) is None
    assert membership(bob, t["s11"]) is not None


def test_an_unknown_tenant_in_the_mapping_grants_and_revokes_nothing(sso, settings):
    d, t = sso.directory, sso.tenants
    client = Client()
    post_login(client, "bob", BOB_PW)
    bob = User.objects.get(username="bob")
    cfg = settings.FLEETROOM_SSO.ldap.model_copy(update={"groups": [
        settings.FLEETROOM_SSO.ldap.groups[0],
        settings.FLEETROOM_SSO.ldap.groups[1].model_copy(update={"tenant": "Dealer A/Gone"})]})
    apply_sso(settings, SsoConfig(ldap=cfg))
    client.logout()
    d.server.remove_from_group(d.viewers, d.bob)
    assert post_login(client, "bob", BOB_PW).status_code == 302
    assert membership(bob, t["c1"]) is not None  # a config mistake is not a removal


# --- lockout, MFA, no local password -----------------------------------------------------

def test_wrong_directory_passwords_count_toward_the_lockout(sso):
    client = Client()
    for _ in range(5):
        response = post_login(client, "alice", WRONG)
        assert response.status_code == 200
        assert not logged_in(client)
    response = post_login(client, "alice", ALICE_PW)  # the 6th, with the right password
    assert response.status_code == 200
    assert not logged_in(client)
    assert "The username and/or password you specified are not correct." in response.text
    assert LockoutEvent.objects.filter(username="alice").count() == 1
    assert len(actions(audit_events.LOGIN_FAILED, username="alice")) >= 5


def test_lockout_counts_under_the_account_name_once_it_exists(sso):
    client = Client()
    post_login(client, "alice", ALICE_PW)
    client.logout()
    for _ in range(5):
        post_login(client, "alice@example.org", WRONG)
    assert not logged_in(client)
    assert post_login(client, "alice", ALICE_PW).status_code == 200
    assert not logged_in(client)
    assert LockoutEvent.objects.filter(username="alice").exists()


def test_mfa_stage_applies_to_directory_logins(sso):
    client = Client()
    post_login(client, "alice", ALICE_PW)
    alice = User.objects.get(username="alice")
    enable_totp(alice)
    client.logout()
    response = post_login(client, "alice", ALICE_PW)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    assert not logged_in(client)  # the directory password alone is not enough
    response = post_code(client, totp_code(stored_totp_secret(alice)))
    assert response.status_code == 302
    assert logged_in(client)
    # API-token issuance is held to the same rule.
    request = RequestFactory().post("/api/token", REMOTE_ADDR="127.0.0.1")
    with pytest.raises(ApiAuthenticationFailed) as err:
        account_services.authenticate_for_api_token(request, login="alice", password=ALICE_PW)
    assert err.value.code == "mfa_code_required"


def test_policy_required_mfa_sends_a_directory_user_to_mfa_setup(sso, settings):
    settings.FLEETROOM_MFA_REQUIRED_FOR_ALL = True
    client = Client()
    post_login(client, "alice", ALICE_PW)
    assert logged_in(client)
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_index")


def test_sso_accounts_have_no_local_password(sso):
    client = Client()
    post_login(client, "alice", ALICE_PW)
    alice = User.objects.get(username="alice")
    assert not alice.has_usable_password()
    # "Set a password" is refused with a reason …
    response = client.post(reverse("account_set_password"),
                           {"password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 200
    assert "You sign in through your organisation" in response.text
    alice.refresh_from_db()
    assert not alice.has_usable_password()
    # … no reset link is mailed …
    client.logout()
    EmailAddress.objects.filter(user=alice).delete()
    mail.outbox.clear()
    client.post(reverse("account_reset_password"), {"email": "alice@example.org"})
    assert not [m for m in mail.outbox if "alice@example.org" in m.to]
    # … and a local-looking password does not log in (the directory decides).
    assert post_login(client, "alice", PASSWORD).status_code == 200
    assert not logged_in(client)


# --- existing accounts ------------------------------------------------------------------

def test_an_existing_local_account_is_not_taken_over(sso):
    local = make_user("alice", email="alice@elsewhere.example")
    client = Client()
    response = post_login(client, "alice", ALICE_PW)
    assert response.status_code == 200
    assert not logged_in(client)
    assert not ExternalIdentity.objects.exists()
    local.refresh_from_db()
    assert local.has_usable_password()
    assert post_login(client, "alice", PASSWORD).status_code == 302  # still the local owner's
    [refused] = actions(audit_events.SSO_LOGIN_REFUSED, provider="ldap",
                        reason="account_exists")
    assert refused.target_id == str(local.pk)


def test_same_address_is_refused_unless_linking_is_configured(sso, settings):
    local = make_user("a.archer", email="alice@example.org")
    client = Client()
    assert post_login(client, "alice", ALICE_PW).status_code == 200
    assert not logged_in(client)
    cfg = settings.FLEETROOM_SSO.ldap.model_copy(update={"link_existing_by_email": True})
    apply_sso(settings, SsoConfig(ldap=cfg))
    cache.clear()
    assert post_login(client, "alice", ALICE_PW).status_code == 302
    assert logged_in(client)
    local.refresh_from_db()
    assert ExternalIdentity.objects.get(user=local).provider == "ldap"
    assert not local.has_usable_password()  # the directory is now the only way in
    assert local.username == "a.archer"
    assert actions(audit_events.SSO_IDENTITY_LINKED)


# --- removal from the directory ----------------------------------------------------------

def test_directory_sync_revokes_access_of_removed_users(sso):
    d, t = sso.directory, sso.tenants
    alice_client, bob_client = Client(), Client()
    post_login(alice_client, "alice", ALICE_PW)
    post_login(bob_client, "bob", BOB_PW)
    bob = User.objects.get(username="bob")
    d.server.delete(d.bob)
    d.server.remove_from_group(d.admins, d.alice)
    report = sso_services.sync_ldap_directory()
    assert (report.checked, report.updated, report.gone) == (2, 1, [bob.pk])
    assert membership(bob, t["c1"]) is None
    assert ExternalIdentity.objects.get(user=bob).gone_at is not None
    bob_client.get(reverse("home"))
    assert not logged_in(bob_client)  # session ended
    assert actions(audit_events.SSO_IDENTITY_GONE)
    alice = User.objects.get(username="alice")
    assert membership(alice, t["c1"]).role == "customer_viewer"  # group change applied
    assert logged_in(alice_client)
    assert post_login(Client(), "bob", BOB_PW).status_code == 200  # and no way back in
    # A second run changes nothing more.
    assert sso_services.sync_ldap_directory().gone == []


def test_directory_sync_stops_when_the_directory_is_unreachable(sso, settings):
    post_login(Client(), "bob", BOB_PW)
    cfg = settings.FLEETROOM_SSO.ldap.model_copy(update={"server_uri": "ldap://127.0.0.1:9"})
    apply_sso(settings, SsoConfig(ldap=cfg))
    with pytest.raises(ldap.SERVER_DOWN):
        sso_services.sync_ldap_directory()
    assert Membership.objects.filter(user__username="bob").exists()


# --- transport security -------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_tls_with_a_ca_file(sso, settings, mode):
    server = sso.directory.server
    uri = server.uri if mode == "starttls" else server.ldaps_uri
    cfg = ldap_config(server, sso.tenants, server_uri=uri, start_tls=mode == "starttls",
                      ca_file=server.ca_file)
    apply_sso(settings, SsoConfig(ldap=cfg))
    client = Client()
    assert post_login(client, "bob", BOB_PW).status_code == 302
    assert logged_in(client)


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_tls_with_the_wrong_ca_refuses_the_login(sso, settings, mode):
    server = sso.directory.server
    uri = server.uri if mode == "starttls" else server.ldaps_uri
    cfg = ldap_config(server, sso.tenants, server_uri=uri, start_tls=mode == "starttls",
                      ca_file=other_ca(server.dir))
    apply_sso(settings, SsoConfig(ldap=cfg))
    client = Client()
    response = post_login(client, "bob", BOB_PW)
    assert response.status_code == 200
    assert not logged_in(client)
    assert not User.objects.filter(username="bob").exists()


def test_bind_password_stays_out_of_error_reports(sso):
    from django.views.debug import SafeExceptionReporterFilter

    assert SERVICE_PASSWORD not in repr(SafeExceptionReporterFilter().get_safe_settings())

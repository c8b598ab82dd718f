"""OpenID Connect login against a real provider on loopback, through allauth.

The provider is a separate Django process built from django-oauth-toolkit's OIDC
mode (tests/support/oidc_provider): discovery, RS256 ID tokens, JWKS, userinfo, and
PKCE required.  Each test runs the whole authorization-code flow: Fleetroom's
"Sign in with …" form → redirect to the provider with ``state`` and a PKCE
challenge → the provider's login form (over real HTTP) → back to Fleetroom's
callback → Fleetroom exchanges the code (with the verifier) at the token endpoint,
checks the ID token (issuer, audience, expiry) and reads userinfo → a logged-in
Fleetroom user mapped to the configured tenant, or a refusal.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import SESSION_KEY
from django.core.cache import cache
from django.test import Client, RequestFactory
from django.urls import reverse
from fleetroom.accounts import audit_events
from fleetroom.accounts import services as account_services
from fleetroom.accounts.adapters import AccountAdapter
from fleetroom.accounts.models import ExternalIdentity, ExternalMembership, User
from fleetroom.accounts.services import ApiAuthenticationFailed
from fleetroom.accounts.sso.oidc import SocialAccountAdapter
from fleetroom.accounts.testing import (
    PASSWORD,
    assert_no_inline_code,
    enable_totp,
    make_user,
    post_code,
    post_login,
    stored_totp_secret,
    totp_code,
)
from fleetroom.config import OidcProviderConfig, SsoConfig
from fleetroom.core.models import AuditEvent
from fleetroom.tenancy.models import Membership

from tests.support.oidc_provider import OidcProvider
from tests.support.sso import apply_sso, make_tenants

pytestmark = pytest.mark.django_db

PROVIDER_ID = "corp"
CLIENT_ID = "fleetroom-test"
CLIENT_SECRET = "client secret of the test provider"
CALLBACK = f"http://testserver/accounts/oidc/{PROVIDER_ID}/login/callback/"
CAROL_PW = "carol's password at the provider"


@pytest.fixture(scope="module")
def provider():
    with OidcProvider([{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                        "redirect_uris": [CALLBACK]}]) as p:
        yield p


@pytest.fixture
def tenants(db):
    return make_tenants()


def provider_config(provider: OidcProvider, **overrides) -> OidcProviderConfig:
    values = {"id": PROVIDER_ID, "name": "Example Corp", "issuer": provider.issuer,
              "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "tenant": "Dealer A/Customer 1", "default_role": "customer_viewer",
              "allowed_email_domains": ["example.org"]}
    values.update(overrides)
    return OidcProviderConfig.model_validate(values)


@pytest.fixture
def sso(settings, provider, tenants):
    apply_sso(settings, SsoConfig(oidc=[provider_config(provider)]))
    return SimpleNamespace(provider=provider, tenants=tenants, settings=settings)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


_counter = iter(range(10_000))


@pytest.fixture
def carol(provider):
    """A person at the provider (a fresh name per test: the provider outlives tests)."""
    name = f"carol{next(_counter)}"
    provider.set_user(name, CAROL_PW, email=f"{name}@example.org", given_name="Carol",
                      family_name="Clark")
    return SimpleNamespace(username=name, email=f"{name}@example.org")


def logged_in(client) -> bool:
    return SESSION_KEY in client.session


def sso_form_action(html: str) -> str:
    """Where the login page's "Sign in with …" form posts to."""
    form = re.search(r'<form method="post"\s+action="([^"]+)"',
                     html[html.index("Or sign in through your organisation"):])
    assert form is not None
    return form.group(1).replace("&amp;", "&")


def oidc_login(client: Client, provider: OidcProvider, username: str, password: str):
    """The whole authorization-code flow, started from the login page's button;
    returns Fleetroom's answer to the callback."""
    action = sso_form_action(client.get(reverse("account_login")).text)
    start = client.post(action)
    assert start.status_code == 302, start.content
    authorize = start["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(f"{provider.issuer}/authorize/")
    assert query["code_challenge_method"] == ["S256"]  # PKCE
    assert len(query["code_challenge"][0]) >= 43
    assert query["state"][0]
    assert query["redirect_uri"] == [CALLBACK]
    callback = provider.sign_in(authorize, username, password)
    parts = urlsplit(callback)
    assert parts.netloc == "testserver"
    assert "code" in parse_qs(parts.query)
    return client.get(f"{parts.path}?{parts.query}")


# --- the flow ----------------------------------------------------------------------------

def test_login_page_offers_the_provider_as_a_post_form(sso):
    page = Client().get(reverse("account_login"))
    assert page.status_code == 200
    assert "Sign in with Example Corp" in page.text
    action = sso_form_action(page.text)
    assert action.startswith(reverse("openid_connect_login",
                                     kwargs={"provider_id": PROVIDER_ID}))
    assert_no_inline_code(page.text)
    # The target after login is passed on to the provider login.
    page = Client().get(reverse("account_login") + "?next=/fleet/")
    assert "next=%2Ffleet%2F" in sso_form_action(page.text)


def test_first_login_creates_a_user_mapped_to_the_tenant(sso, carol):
    t = sso.tenants
    client = Client()
    response = oidc_login(client, sso.provider, carol.username, CAROL_PW)
    assert response.status_code == 302, response.content
    assert response["Location"] == "/"
    assert logged_in(client)
    user = User.objects.get(email=carol.email)
    assert (user.first_name, user.last_name) == ("Carol", "Clark")
    assert not user.has_usable_password()
    account = SocialAccount.objects.get(user=user)
    assert account.provider == PROVIDER_ID
    identity = ExternalIdentity.objects.get(user=user)
    assert (identity.kind, identity.provider, identity.subject) == ("oidc", PROVIDER_ID,
                                                                    account.uid)
    assert identity.social_account == account
    assert identity.tenant == t["c1"]
    m = Membership.objects.get(user=user)
    assert (m.tenant, m.role) == (t["c1"], "customer_viewer")
    assert ExternalMembership.objects.get(membership=m).source == f"oidc:{PROVIDER_ID}"
    # The ID token allauth checked, as it stored it: ours, for us, about this person.
    id_token = account.extra_data["id_token"]
    assert id_token["iss"] == sso.provider.issuer
    assert id_token["aud"] == CLIENT_ID
    assert id_token["sub"] == account.uid
    [created] = AuditEvent.objects.filter(action=audit_events.SSO_USER_CREATED)
    assert created.data == {"provider": PROVIDER_ID, "subject": account.uid}
    [grant] = AuditEvent.objects.filter(action="membership.granted", tenant=t["c1"])
    assert grant.actor_label == "system"


def test_returning_login_is_the_same_user_with_fresh_attributes(sso, carol):
    client = Client()
    oidc_login(client, sso.provider, carol.username, CAROL_PW)
    user = User.objects.get(email=carol.email)
    client.logout()
    sso.provider.set_user(carol.username, CAROL_PW, email=carol.email, given_name="Caroline",
                          family_name="Clark-Jones")
    response = oidc_login(client, sso.provider, carol.username, CAROL_PW)
    assert response.status_code == 302
    assert logged_in(client)
    user.refresh_from_db()
    assert (user.first_name, user.last_name) == ("Caroline", "Clark-Jones")
    assert User.objects.count() == 1
    assert Membership.objects.filter(user=user).count() == 1


def test_mfa_stage_applies_to_provider_logins(sso, carol):
    client = Client()
    oidc_login(client, sso.provider, carol.username, CAROL_PW)
    user = User.objects.get(email=carol.email)
    enable_totp(user)
    client.logout()
    response = oidc_login(client, sso.provider, carol.username, CAROL_PW)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    assert not logged_in(client)  # the provider login alone is not enough
    assert post_code(client, "000000").status_code == 200
    assert not logged_in(client)
    response = post_code(client, totp_code(stored_totp_secret(user)))
    assert response.status_code == 302
    assert logged_in(client)


def test_a_locked_login_name_is_refused_here_too(sso, carol):
    client = Client()
    oidc_login(client, sso.provider, carol.username, CAROL_PW)
    user = User.objects.get(email=carol.email)
    client.logout()
    for _ in range(5):
        post_login(Client(), user.username, "not the password, five times")
    response = oidc_login(client, sso.provider, carol.username, CAROL_PW)
    assert response.status_code == 403
    assert not logged_in(client)


# --- refusals ----------------------------------------------------------------------------

def test_an_email_domain_that_is_not_allowed_is_refused(sso, provider):
    provider.set_user("mallory", CAROL_PW, email="mallory@elsewhere.example")
    client = Client()
    response = oidc_login(client, provider, "mallory", CAROL_PW)
    assert response.status_code == 403
    assert "not from a domain that may sign in here" in response.text
    assert not logged_in(client)
    assert not User.objects.exists()
    assert AuditEvent.objects.filter(action=audit_events.SSO_LOGIN_REFUSED,
                                     data__reason="email_domain").exists()


def test_an_unverified_address_is_refused(sso, provider):
    provider.set_user("dave", CAROL_PW, email="dave@example.org", email_verified=False)
    response = oidc_login(Client(), provider, "dave", CAROL_PW)
    assert response.status_code == 403
    assert not User.objects.exists()


def test_an_existing_account_is_linked_only_when_configured(sso, settings, carol):
    local = make_user("carol.local", email=carol.email)
    client = Client()
    response = oidc_login(client, sso.provider, carol.username, CAROL_PW)
    assert response.status_code == 403
    assert "already exists" in response.text
    assert not logged_in(client)
    assert post_login(Client(), "carol.local", PASSWORD).status_code == 302
    apply_sso(settings, SsoConfig(oidc=[provider_config(sso.provider,
                                                        link_existing_by_email=True)]))
    response = oidc_login(client, sso.provider, carol.username, CAROL_PW)
    assert response.status_code == 302
    assert logged_in(client)
    assert client.session[SESSION_KEY] == str(local.pk)
    local.refresh_from_db()
    assert not local.has_usable_password()
    assert ExternalIdentity.objects.get(user=local).provider == PROVIDER_ID
    assert not Membership.objects.filter(user=local).exists()  # linking grants nothing
    assert AuditEvent.objects.filter(action=audit_events.SSO_IDENTITY_LINKED).exists()


def test_an_id_token_from_another_issuer_is_refused(settings, provider, tenants, carol):
    """allauth checks the ID token's ``iss`` against the discovery document's issuer,
    which we pin to the configured one: a provider answering for another issuer (here:
    the configured issuer differs from what the provider signs) gets nobody in."""
    cfg = provider_config(provider).model_copy(
        update={"issuer": provider.issuer.replace("/o", "/o/")})
    apply_sso(settings, SsoConfig(oidc=[cfg]))
    client = Client()
    response = oidc_login(client, provider, carol.username, CAROL_PW)
    assert response.status_code == 401
    assert "Third-Party Login Failure" in response.text
    assert not logged_in(client)
    assert not User.objects.exists()


def test_a_forged_state_is_refused(sso, carol):
    client = Client()
    start = client.post(reverse("openid_connect_login", kwargs={"provider_id": PROVIDER_ID}))
    callback = sso.provider.sign_in(start["Location"], carol.username, CAROL_PW)
    parts = urlsplit(callback)
    query = re.sub(r"state=[^&]+", "state=forged", parts.query)
    response = client.get(f"{parts.path}?{query}")
    assert not logged_in(client)
    assert not User.objects.exists()
    assert response.status_code == 401


def test_signup_stays_closed_for_everything_else(sso, rf):
    request = rf.get("/")
    assert AccountAdapter(request).is_open_for_signup(request) is False
    other = SimpleNamespace(account=SimpleNamespace(provider="not-configured"))
    assert SocialAccountAdapter(request).is_open_for_signup(request, other) is False
    page = Client().get(reverse("account_signup"))
    assert "Sign Up Closed" in page.text or page.status_code in (403, 404)


def test_no_password_reset_or_set_for_provider_users(sso, carol):
    client = Client()
    oidc_login(client, sso.provider, carol.username, CAROL_PW)
    response = client.post(reverse("account_set_password"),
                           {"password1": PASSWORD, "password2": PASSWORD})
    assert "You sign in through your organisation" in response.text
    user = User.objects.get(email=carol.email)
    assert not user.has_usable_password()
    # No password login anywhere: not the form, not API-token issuance.
    assert post_login(Client(), user.username, PASSWORD).status_code == 200
    with pytest.raises(ApiAuthenticationFailed) as err:
        account_services.authenticate_for_api_token(
            RequestFactory().post("/api/token", REMOTE_ADDR="127.0.0.1"),
            login=user.username, password=PASSWORD)
    assert err.value.code == "invalid_credentials"


def test_policy_required_mfa_sends_a_provider_user_to_mfa_setup(sso, carol, settings):
    settings.FLEETROOM_MFA_REQUIRED_FOR_ALL = True
    client = Client()
    oidc_login(client, sso.provider, carol.username, CAROL_PW)
    assert logged_in(client)
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_index")
    # Setting up TOTP needs no password re-entry (there is none); the page is reachable.
    assert client.get(reverse("mfa_activate_totp")).status_code == 200


def test_secrets_stay_out_of_error_reports(sso):
    from django.views.debug import SafeExceptionReporterFilter

    safe = repr(SafeExceptionReporterFilter().get_safe_settings())
    assert CLIENT_SECRET not in safe


def test_sso_texts_are_translated(sso):
    from django.utils import translation

    with translation.override("de"):
        page = Client().get(reverse("account_login"))
    assert page["Content-Language"] == "de"
    assert "Anmelden mit Example Corp" in page.text
    assert "Oder melden Sie sich über Ihre Organisation an:" in page.text


def test_an_unreachable_provider_is_explained_not_an_error(settings, provider, tenants):
    cfg = provider_config(provider, issuer="http://127.0.0.1:9/o")  # nothing listens there
    apply_sso(settings, SsoConfig(oidc=[cfg]))
    client = Client()
    action = sso_form_action(client.get(reverse("account_login")).text)
    response = client.post(action)
    assert response.status_code == 503
    assert "Signing in is not possible right now" in response.text

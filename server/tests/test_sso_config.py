"""[sso] configuration: strict parsing with clear messages, secrets kept out of sight,
and the Django settings derived from it."""

from __future__ import annotations

import typing

import ldap
import pytest
from fleetroom import config
from fleetroom.accounts.sso import conf
from fleetroom.tenancy.permissions import BuiltinRole

KEY = "k" * 60
BIND_SECRET = "bind-password-never-shown"
CLIENT_SECRET = "client-secret-never-shown"

LDAP_TOML = """
[sso.ldap]
server_uri = "ldaps://dc1.example.com"
bind_dn = "cn=svc,ou=services,dc=example,dc=com"
user_search_base = "ou=people,dc=example,dc=com"
group_search_base = "ou=groups,dc=example,dc=com"
ca_file = "{ca}"

[[sso.ldap.groups]]
group = "cn=Geschäftsführung,ou=groups,dc=example,dc=com"
tenant = "Dealer/Kunde"
role = "customer_admin"
"""

OIDC_TOML = """
[[sso.oidc]]
id = "corp-idp"
name = "Example Corp"
issuer = "https://login.example.com/realms/corp"
client_id = "fleetroom"
tenant = 12
allowed_email_domains = ["Example.com", "@example.net"]
"""


def load(tmp_path, toml: str = "", **env: str) -> config.Config:
    (tmp_path / config.CONFIG_FILE).write_text(f'secret_key = "{KEY}"\n{toml}',
                                               encoding="utf-8")
    return config.load({"FLEETROOM_DATA_DIR": str(tmp_path), **env})


def test_sso_is_off_by_default(tmp_path):
    cfg = load(tmp_path)
    assert cfg.sso.ldap is None
    assert cfg.sso.oidc == []


def test_full_sso_section_with_secrets_from_the_environment(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = load(tmp_path, LDAP_TOML.format(ca=ca) + OIDC_TOML,
               FLEETROOM_SSO_LDAP_BIND_PASSWORD=BIND_SECRET,
               FLEETROOM_SSO_LDAP_TIMEOUT_SECONDS="3",
               FLEETROOM_SSO_OIDC_CORP_IDP_CLIENT_SECRET=CLIENT_SECRET)
    assert cfg.sso.ldap is not None
    assert cfg.sso.ldap.bind_password.get_secret_value() == BIND_SECRET
    assert cfg.sso.ldap.timeout_seconds == 3
    assert cfg.sso.ldap.groups[0].tenant == "Dealer/Kunde"
    [oidc] = cfg.sso.oidc
    assert oidc.client_secret.get_secret_value() == CLIENT_SECRET
    assert oidc.tenant == 12
    assert oidc.allowed_email_domains == ["example.com", "example.net"]
    assert oidc.scopes == ["openid", "profile", "email"]
    # Secrets never appear in a repr (logs, tracebacks, `fleetroom status`).
    assert BIND_SECRET not in repr(cfg)
    assert CLIENT_SECRET not in repr(cfg)


@pytest.mark.parametrize(("toml", "env", "message"), [
    ('[sso.ldap]\nserver_uri = "http://dc1"\nuser_search_base = "dc=x"\n', {},
     "must start with ldap://"),
    ('[sso.ldap]\nserver_uri = "ldap://dc1.example.com"\nuser_search_base = "dc=x"\n', {},
     "clear text"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "not a dn"\n', {},
     "user_search_base is not a valid LDAP DN"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\n'
     'user_search_filter = "(uid=someone)"\n', {}, "must contain %\\(user\\)s"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\n'
     'user_search_filter = "(uid=%(user)s"\n', {}, "balanced parentheses"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\n'
     'bind_dn = "cn=svc,dc=x"\n', {}, "bind_password is empty"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\n'
     'ca_file = "/nonexistent/ca.pem"\n', {}, "CA file /nonexistent/ca.pem does not exist"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\n'
     '[[sso.ldap.groups]]\ngroup = "cn=g,dc=x"\ntenant = 1\nrole = "customer_admin"\n', {},
     "group_search_base"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\n'
     'group_search_base = "dc=x"\n'
     '[[sso.ldap.groups]]\ngroup = "cn=g,dc=x"\ntenant = 1\nrole = "superuser"\n', {},
     "sso.ldap.groups.0.role"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\nbogus = 1\n', {},
     "sso.ldap.bogus"),
    ("", {"FLEETROOM_SSO_LDAP_BOGUS": "1"}, "unknown environment variable "
     "FLEETROOM_SSO_LDAP_BOGUS"),
    ("", {"FLEETROOM_SSO_OIDC_NOPE_CLIENT_SECRET": "x"}, "no \\[\\[sso.oidc\\]\\] provider"),
    ('[sso.ldap]\nserver_uri = "ldaps://dc1"\nuser_search_base = "dc=x"\n',
     {"FLEETROOM_SSO_LDAP_START_TLS": "yes"}, "must be true or false"),
    (OIDC_TOML, {}, "sso.oidc.0.client_secret: Field required"),
    (OIDC_TOML.replace("https://login", "http://login"), {}, "must use https://"),
    (OIDC_TOML.replace('"corp-idp"', '"Corp IdP"'), {}, "lower-case letters"),
    (OIDC_TOML.replace('"corp-idp"', '"ldap"'), {}, "reserved"),
    (OIDC_TOML.replace('["Example.com", "@example.net"]', "[]"), {},
     "allowed_email_domains"),
    (OIDC_TOML.replace('["Example.com", "@example.net"]', '["not a domain"]'), {},
     "is not a domain"),
    (OIDC_TOML + 'scopes = ["profile"]\n', {}, "must include 'openid'"),
    (OIDC_TOML + OIDC_TOML, {}, "two \\[\\[sso.oidc\\]\\] providers have the id corp-idp"),
])
def test_wrong_sso_values_stop_start_up(tmp_path, toml, env, message):
    secrets = {}
    if "[sso.ldap]" in toml and "bind_password is empty" not in message:
        secrets["FLEETROOM_SSO_LDAP_BIND_PASSWORD"] = BIND_SECRET
    if "client_secret" not in message and "[[sso.oidc]]" in toml:
        toml = toml.replace('client_id = "fleetroom"\n',
                            f'client_id = "fleetroom"\nclient_secret = "{CLIENT_SECRET}"\n')
    with pytest.raises(config.ConfigError, match=message) as err:
        load(tmp_path, toml, **secrets, **env)
    assert BIND_SECRET not in str(err.value)
    assert CLIENT_SECRET not in str(err.value)


def test_plain_ldap_is_fine_on_loopback_or_with_starttls(tmp_path):
    base = '[sso.ldap]\nuser_search_base = "dc=x"\n'
    assert load(tmp_path, base + 'server_uri = "ldap://127.0.0.1:3389"\n').sso.ldap
    assert load(tmp_path, base + 'server_uri = "ldap://dc1.example.com"\n'
                'start_tls = true\n').sso.ldap
    assert load(tmp_path, base + 'server_uri = "ldap://dc1.example.com"\n'
                'allow_plaintext = true\n').sso.ldap


def test_role_names_match_the_built_in_roles():
    assert set(typing.get_args(config.BuiltinRoleName)) == {r.value for r in BuiltinRole}


def test_starter_file_still_parses_and_documents_sso(tmp_path):
    text = config.starter_toml()
    assert "[sso.ldap]" in text
    assert "[[sso.oidc]]" in text
    (tmp_path / config.CONFIG_FILE).write_text(text)
    assert config.load({"FLEETROOM_DATA_DIR": str(tmp_path)}).sso.ldap is None


def test_django_settings_from_the_config(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = load(tmp_path, LDAP_TOML.format(ca=ca) + OIDC_TOML,
               FLEETROOM_SSO_LDAP_BIND_PASSWORD=BIND_SECRET,
               FLEETROOM_SSO_OIDC_CORP_IDP_CLIENT_SECRET=CLIENT_SECRET).sso
    base = [conf.LOCKOUT_BACKEND, "allauth.account.auth_backends.AuthenticationBackend"]
    out = conf.django_settings(cfg, backends=base)
    assert out["AUTHENTICATION_BACKENDS"] == [*base, conf.LDAP_BACKEND]
    assert out["AUTH_LDAP_BIND_PASSWORD"] == BIND_SECRET
    assert out["AUTH_LDAP_USER_SEARCH"].attrlist == ["*", "entryUUID"]
    assert out["AUTH_LDAP_CACHE_TIMEOUT"] == 0
    options = out["AUTH_LDAP_CONNECTION_OPTIONS"]
    assert options[ldap.OPT_X_TLS_CACERTFILE] == str(ca)
    assert list(options)[-1] == ldap.OPT_X_TLS_NEWCTX  # must be applied last
    assert options[ldap.OPT_NETWORK_TIMEOUT] == 10
    [app] = out["SOCIALACCOUNT_PROVIDERS"]["openid_connect"]["APPS"]
    assert app["provider_id"] == "corp-idp"
    assert app["secret"] == CLIENT_SECRET
    assert app["settings"]["server_url"] == (
        "https://login.example.com/realms/corp/.well-known/openid-configuration")
    assert app["settings"]["openid_configuration_overrides"] == {
        "issuer": "https://login.example.com/realms/corp"}
    assert app["settings"]["oauth_pkce_enabled"] is True
    assert out["SOCIALACCOUNT_STORE_TOKENS"] is False
    assert conf.normalise_dn("CN=Geschäftsführung, OU=Groups,DC=example,DC=com") == (
        "cn=geschäftsführung,ou=groups,dc=example,dc=com")

"""Django settings for SSO, derived from :class:`fleetroom.config.SsoConfig`.

Imported by ``settings.py`` (before the app registry exists), so nothing here may
touch models.  Tests call :func:`django_settings` with their own configuration
and apply the result, which is how the real wiring gets tested.
"""

from __future__ import annotations

from typing import Any

from fleetroom.config import LdapConfig, OidcProviderConfig, SsoConfig

LDAP_BACKEND = "fleetroom.accounts.sso.ldap_backend.LdapBackend"
LOCKOUT_BACKEND = "fleetroom.accounts.lockout.LockoutBackend"

_GROUP_CLASSES = {
    "groupOfNames": ("GroupOfNamesType", "(objectClass=groupOfNames)"),
    "nestedGroupOfNames": ("NestedGroupOfNamesType", "(objectClass=groupOfNames)"),
    "groupOfUniqueNames": ("GroupOfUniqueNamesType", "(objectClass=groupOfUniqueNames)"),
    "posixGroup": ("PosixGroupType", "(objectClass=posixGroup)"),
    "activeDirectory": ("ActiveDirectoryGroupType", "(objectClass=group)"),
    "nestedActiveDirectory": ("NestedActiveDirectoryGroupType", "(objectClass=group)"),
}


def normalise_dn(dn: str) -> str:
    """One spelling per DN (spaces after commas, attribute-name and value case do not
    matter), so configured group DNs compare equal to what the server returns."""
    import ldap.dn  # type: ignore[import-untyped]

    return str(ldap.dn.dn2str(ldap.dn.str2dn(dn.strip()))).lower()


def ldap_connection_options(cfg: LdapConfig) -> dict[int, Any]:
    """python-ldap options for every connection: timeouts so a dead directory cannot
    hang a login, no referral chasing (Active Directory's referrals would need
    credentials the library does not pass on), and the CA file.  ``OPT_X_TLS_NEWCTX``
    must come last: it builds the TLS context from the options set before it."""
    import ldap

    options: dict[int, Any] = {
        ldap.OPT_NETWORK_TIMEOUT: cfg.timeout_seconds,
        ldap.OPT_TIMEOUT: cfg.timeout_seconds,
        ldap.OPT_REFERRALS: 0,
        ldap.OPT_PROTOCOL_VERSION: 3,
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
    }
    if cfg.ca_file is not None:
        options[ldap.OPT_X_TLS_CACERTFILE] = str(cfg.ca_file)
    options[ldap.OPT_X_TLS_NEWCTX] = 0
    return options


def ldap_settings(cfg: LdapConfig) -> dict[str, Any]:
    """``AUTH_LDAP_*`` for django-auth-ldap.

    Attribute mapping and group handling are ours (:mod:`.services`), so the
    library's own user population, group mirroring and permission lookups are off,
    and the DN cache is off so a rename or removal in the directory counts at once.
    """
    import ldap
    from django_auth_ldap import config as ldap_config  # type: ignore[import-untyped]

    group_class_name, group_filter = _GROUP_CLASSES[cfg.group_type]
    out: dict[str, Any] = {
        "AUTH_LDAP_SERVER_URI": cfg.server_uri,
        "AUTH_LDAP_BIND_DN": cfg.bind_dn,
        "AUTH_LDAP_BIND_PASSWORD": cfg.bind_password.get_secret_value(),
        # "*" is every user attribute; operational ones (entryUUID) must be named, on
        # the search itself: its result is the entry the library keeps.
        "AUTH_LDAP_USER_SEARCH": ldap_config.LDAPSearch(
            cfg.user_search_base, ldap.SCOPE_SUBTREE, cfg.user_search_filter,
            ["*", cfg.subject_attribute]),
        "AUTH_LDAP_USER_ATTRLIST": ["*", cfg.subject_attribute],
        "AUTH_LDAP_START_TLS": cfg.start_tls,
        "AUTH_LDAP_CONNECTION_OPTIONS": ldap_connection_options(cfg),
        "AUTH_LDAP_USER_ATTR_MAP": {},
        "AUTH_LDAP_ALWAYS_UPDATE_USER": False,
        "AUTH_LDAP_FIND_GROUP_PERMS": False,
        "AUTH_LDAP_MIRROR_GROUPS": None,
        "AUTH_LDAP_CACHE_TIMEOUT": 0,
        "AUTH_LDAP_BIND_AS_AUTHENTICATING_USER": False,
        "AUTH_LDAP_REQUIRE_GROUP": None,
        "AUTH_LDAP_DENY_GROUP": None,
        "AUTH_LDAP_NO_NEW_USERS": False,
        "AUTH_LDAP_GROUP_TYPE": getattr(ldap_config, group_class_name)(),
        "AUTH_LDAP_GROUP_SEARCH": None,
    }
    if cfg.group_search_base:
        filterstr = group_filter
        if cfg.group_search_filter:
            filterstr = f"(&{group_filter}{cfg.group_search_filter})"
        out["AUTH_LDAP_GROUP_SEARCH"] = ldap_config.LDAPSearch(
            cfg.group_search_base, ldap.SCOPE_SUBTREE, filterstr)
    return out


def oidc_app(cfg: OidcProviderConfig) -> dict[str, Any]:
    """One entry of allauth's ``SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"]``.

    The issuer is pinned (``openid_configuration_overrides``): allauth checks the ID
    token's ``iss`` against the discovery document, and the discovery document is
    only trustworthy when its issuer is the one we configured.
    """
    settings: dict[str, Any] = {
        # OpenID Connect Discovery 1.0 §4: a trailing "/" goes before the well-known path.
        "server_url": cfg.issuer.rstrip("/") + "/.well-known/openid-configuration",
        "oauth_pkce_enabled": True,
        "scope": list(cfg.scopes),
        "fetch_userinfo": True,
        "openid_configuration_overrides": {"issuer": cfg.issuer},
    }
    if cfg.token_auth_method:
        settings["token_auth_method"] = cfg.token_auth_method
    return {
        "provider_id": cfg.id,
        "name": cfg.name,
        "client_id": cfg.client_id,
        "secret": cfg.client_secret.get_secret_value(),
        "settings": settings,
    }


def authentication_backends(base: list[str], sso: SsoConfig) -> list[str]:
    """``base`` with the LDAP backend added when LDAP is configured: after the lockout
    backend (a locked name never reaches the directory) and after allauth's (local
    accounts answer without a round trip to the directory)."""
    backends = [b for b in base if b != LDAP_BACKEND]
    if sso.ldap is not None:
        backends.append(LDAP_BACKEND)
    return backends


def django_settings(sso: SsoConfig, *, backends: list[str]) -> dict[str, Any]:
    """Every setting SSO needs, as a dict for ``settings.py`` (or a test) to apply."""
    out: dict[str, Any] = {
        "FLEETROOM_SSO": sso,
        "AUTHENTICATION_BACKENDS": authentication_backends(backends, sso),
        "SOCIALACCOUNT_ADAPTER": "fleetroom.accounts.sso.oidc.SocialAccountAdapter",
        "SOCIALACCOUNT_PROVIDERS": {
            "openid_connect": {
                "provider_class": "fleetroom.accounts.sso.oidc.OpenIDConnectProvider",
                "OAUTH_PKCE_ENABLED": True,
                "APPS": [oidc_app(p) for p in sso.oidc],
            },
        },
        # Users are created by our adapter's rules, without a form to fill in.
        "SOCIALACCOUNT_AUTO_SIGNUP": True,
        "SOCIALACCOUNT_EMAIL_AUTHENTICATION": False,  # linking by address is ours, opt-in
        "SOCIALACCOUNT_EMAIL_VERIFICATION": "none",
        "SOCIALACCOUNT_LOGIN_ON_GET": False,  # a POST with CSRF token starts a login
        "SOCIALACCOUNT_STORE_TOKENS": False,  # no provider tokens at rest
        "SOCIALACCOUNT_REQUESTS_TIMEOUT": 10,
    }
    if sso.ldap is not None:
        out.update(ldap_settings(sso.ldap))
    return out

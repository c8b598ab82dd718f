"""Server configuration: environment variables over one optional TOML file, strictly.

Every setting has one name in the TOML file (``[section] key``) and one in the
environment (``FLEETROOM_SECTION_KEY``, or ``FLEETROOM_KEY`` for the top level).
Anything unknown or malformed stops start-up with a message that names the
setting and where it came from — a typo must never silently fall back to a
default (healthchecks' ``envbool`` refuses anything but true/false; so do we).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_FILE = "fleetroom.toml"
NOT_SERVER_PREFIXES = ("FLEETROOM_SNMP_", "FLEETROOM_AGENT_", "FLEETROOM_DEMO_",
                       "FLEETROOM_SHARED", "FLEETROOM_BENCH_")
"""Variables of the agent, the demo and the tests, which share the prefix."""


class ConfigError(Exception):
    """The configuration is wrong; the message says what, where, and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    """SQLite in the data directory by default; PostgreSQL by giving a URL."""

    url: str | None = None
    """``postgresql://user:pass@host:port/name``; empty means SQLite in the data dir."""
    conn_max_age: int = Field(60, ge=0)

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, v: str | None) -> str | None:
        if v and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("only postgresql:// URLs are supported (SQLite is the default)")
        return v or None


class WorkerConfig(_Section):
    """Background jobs (Huey): SQLite file by default, PostgreSQL or Redis to scale out."""

    backend: Literal["sqlite", "postgres", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    workers: int = Field(2, ge=1, le=64)
    immediate: bool = False
    """Run tasks inline (tests only)."""


class SecurityConfig(_Section):
    """HTTPS and session policy."""

    https: bool = False
    """Behind TLS: secure cookies, HSTS, redirect to https."""
    hsts_seconds: int = Field(31536000, ge=0)
    trusted_proxies: bool = False
    """Trust X-Forwarded-Proto/-For from a reverse proxy (only when one is in front)."""
    csrf_trusted_origins: list[str] = Field(default_factory=list)
    session_idle_minutes: int = Field(30, ge=1)
    session_absolute_hours: int = Field(12, ge=1)
    lockout_failures: int = Field(5, ge=1)
    lockout_cooloff_minutes: int = Field(15, ge=1)
    deactivate_after_days: int = Field(90, ge=1)
    deactivate_after_days_by_role: dict[str, int] = Field(default_factory=dict)
    """Per built-in role, e.g. ``{customer_viewer = 180}`` (TOML only); a person with
    several roles gets the shortest of their roles' limits."""
    mfa_required_for_all: bool = False
    """Every user must set up a second factor (operator and dealer roles always must)."""


    @field_validator("deactivate_after_days_by_role")
    @classmethod
    def _known_roles(cls, v: dict[str, int]) -> dict[str, int]:
        known = {"operator_admin", "dealer_admin", "dealer_technician", "customer_admin",
                 "customer_viewer"}
        for role, days in v.items():
            if role not in known:
                raise ValueError(f"unknown role {role!r} (one of {', '.join(sorted(known))})")
            if days < 1:
                raise ValueError(f"{role}: at least 1 day")
        return v


class FleetConfig(_Section):
    """Reading history and device state."""

    raw_retention_days: int = Field(90, ge=1, le=3650)
    """Raw readings are kept this long; daily counter rollups stay for good."""
    not_reporting_hours: int = Field(24, ge=1, le=24 * 120)
    """A device without a reading for this long is shown as "not reporting"."""
    max_future_skew_seconds: int = Field(3600, ge=0, le=7 * 86400)
    """Readings dated further ahead than this (agent clock drift) are refused."""


class MailConfig(_Section):
    """Outgoing mail (password resets, security notices, later alerts).

    Without a host, mail is written as files into ``<data_dir>/mail`` — nothing is
    lost and nothing leaves the machine until an operator configures a server.
    """

    host: str | None = None
    port: int = Field(587, ge=1, le=65535)
    user: str | None = None
    password: str | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    from_address: str = "Fleetroom <fleetroom@localhost>"
    timeout_seconds: int = Field(20, ge=1, le=300)


class ApiConfig(_Section):
    """REST API tokens and rate limits (why each default: fleetroom/api/conf.py)."""

    token_default_days: int = Field(90, ge=1, le=3650)
    token_max_days: int = Field(365, ge=1, le=3650)
    max_tokens_per_user: int = Field(50, ge=1, le=10000)
    rate: str = Field("600/m", pattern=r"^\d+/[smhd]$")
    """Requests per user and period (``s``, ``m``, ``h``, ``d``), shared by their tokens."""
    token_issue_rate: str = Field("20/m", pattern=r"^\d+/[smhd]$")


class AgentsConfig(_Section):
    """Agent traffic: size caps, rate limits, backlog protection, enrollment tokens
    (why each default: fleetroom/agents/conf.py)."""

    max_envelope_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    agent_rate: str = Field("120/m", pattern=r"^\d+/[smhd]$")
    tenant_rate: str = Field("6000/m", pattern=r"^\d+/[smhd]$")
    source_failure_rate: str = Field("30/m", pattern=r"^\d+/[smhd]$")
    """Unauthenticated failures (bad signature, unknown agent, malformed) per address."""
    enroll_failure_rate: str = Field("20/h", pattern=r"^\d+/[smhd]$")
    """Refused enrollment attempts per address (successful ones are not limited)."""
    max_backlog_batches: int = Field(5000, ge=1)
    token_default_hours: int = Field(24, ge=1, le=24 * 90)
    token_max_days: int = Field(90, ge=1, le=3650)
    raw_retention_days: int = Field(14, ge=1, le=3650)
    item_retention_days: int = Field(180, ge=1, le=3650)
    command_redeliver_seconds: int = Field(600, ge=30, le=86400)


class CacheConfig(_Section):
    """The cache every web and worker process shares (rate limits, throttles, sessions'
    helpers).  A per-process memory cache would let each gunicorn worker count login
    attempts on its own, so the default is a table in the database."""

    backend: Literal["database", "redis"] = "database"
    redis_url: str = "redis://127.0.0.1:6379/1"


class MailIntakeConfig(_Section):
    """Agents' envelopes by e-mail (``fleetroom mail-intake``; docs/mail-transport.md).

    A built-in SMTP receiver (``listen``), IMAP polling of a mailbox (``imap_host``),
    or both; ``fleetroom serve`` starts the intake when either is set.
    """

    address: str | None = Field(None, pattern=r"^[^\s<>@]+@[^\s<>@]+$", max_length=254)
    """Where agents send their mail (given to them at enrollment); empty: agents are
    not offered the e-mail transport."""
    listen: str | None = None
    """``HOST:PORT`` for the SMTP receiver, e.g. ``0.0.0.0:2525``; empty: no receiver."""
    hostname: str = "fleetroom"
    """The name the receiver greets with."""
    tls_cert: Path | None = None
    """Certificate chain (PEM) for STARTTLS; default: the server's ``tls_cert``."""
    tls_key: Path | None = None
    require_starttls: bool = True
    """With a certificate, refuse mail until the client has started TLS."""
    accept_to: list[str] = Field(default_factory=list)
    """Recipient addresses the receiver accepts; empty: any."""
    max_mail_bytes: int = Field(6_000_000, ge=16 * 1024, le=100_000_000)
    max_parts: int = Field(64, ge=1, le=1024)
    max_buffered_mb: int = Field(64, ge=1, le=4096)
    """Memory for incomplete multi-mail messages; beyond it mail is deferred (4xx)."""
    incomplete_hours: int = Field(48, ge=1, le=24 * 30)
    """An incomplete message is dropped this long after its first part."""
    imap_host: str | None = None
    imap_port: int = Field(993, ge=1, le=65535)
    imap_security: Literal["tls", "starttls", "none"] = "tls"
    """``none`` only for a server on this machine."""
    imap_user: str | None = None
    imap_password: SecretStr = SecretStr("")
    imap_mailbox: str = "INBOX"
    imap_ca_file: Path | None = None
    imap_poll_seconds: int = Field(60, ge=5, le=86400)

    @property
    def enabled(self) -> bool:
        """Whether anything is configured to receive mail."""
        return bool(self.listen or self.imap_host)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v and not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}", v):
            raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:2525")
        return v or None

    @model_validator(mode="after")
    def _consistent(self) -> MailIntakeConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        for path in (self.tls_cert, self.tls_key, self.imap_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"file not found: {path}")
        if self.imap_host:
            if not self.imap_user or not self.imap_password.get_secret_value():
                raise ValueError("imap_host needs imap_user and imap_password")
            if self.imap_security == "none" and not _is_loopback_host(self.imap_host):
                raise ValueError("imap_security = \"none\" would send the password in clear "
                                 "text: only for a server on this machine")
        return self


class MqttConfig(_Section):
    """The MQTT transport (optional; docs/mqtt.md): the broker, the bridge's account and
    the dynamic-security administrator that creates one account per agent at enrollment.

    Without ``url`` MQTT is off: agents get no broker credentials and ``fleetroom serve``
    starts no bridge.
    """

    url: str | None = None
    """How the server reaches the broker: ``mqtts://host:8883`` or ``wss://host:443/mqtt``
    (``mqtt://`` only for a broker on this machine)."""
    agent_url: str | None = None
    """What agents are told, e.g. ``wss://mqtt.example.com/mqtt``; default: ``url``."""
    protocol: Literal["5", "3.1.1"] = "5"
    ca_file: Path | None = None
    """PEM file with the CA that signed the broker's certificate; default: system CAs."""
    bridge_username: str = Field("fleetroom-bridge", min_length=1, max_length=64)
    bridge_password: SecretStr = SecretStr("")
    admin_username: str = Field("fleetroom-admin", min_length=1, max_length=64)
    admin_password: SecretStr = SecretStr("")
    """Dynamic-security administrator (``mosquitto_ctrl dynsec init``)."""
    shared_group: str = Field("fleetroom", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Bridges in one group share the agents' messages (``$share/<group>/…``)."""
    workers: int = Field(4, ge=1, le=64)
    """Envelopes one bridge process handles at once (database threads)."""
    timeout_seconds: int = Field(10, ge=1, le=120)

    @property
    def enabled(self) -> bool:
        """Whether a broker is configured."""
        return bool(self.url)

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        for name in ("url", "agent_url"):
            value = getattr(self, name)
            if not value:
                continue
            match = re.fullmatch(r"(mqtts|wss|mqtt)://(\[[0-9a-fA-F:]+\]|[^:/\s]+)(:\d{1,5})?"
                                 r"(/\S*)?", value)
            if not match:
                raise ValueError(f"{name} must look like mqtts://host:8883 or "
                                 "wss://host/mqtt")
            scheme, host = match.group(1), match.group(2)
            if scheme == "mqtt" and (name == "agent_url" or not _is_loopback_host(host)):
                raise ValueError(f"{name}: mqtt:// has no TLS; use mqtts:// or wss:// "
                                 "(mqtt:// only for the server's own broker on this machine)")
        if self.url:
            if not self.bridge_password.get_secret_value():
                raise ValueError("url is set, so bridge_password is needed (or "
                                 "FLEETROOM_MQTT_BRIDGE_PASSWORD)")
            if not self.admin_password.get_secret_value():
                raise ValueError("url is set, so admin_password is needed to create agents' "
                                 "broker accounts (or FLEETROOM_MQTT_ADMIN_PASSWORD)")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"CA file {self.ca_file} does not exist")
        return self


# --- SSO: LDAP bind and OpenID Connect (fleetroom/accounts/sso) --------------------------
# Parsed here like every other section; turned into Django settings by
# fleetroom.accounts.sso.conf.  Secrets are SecretStr, so a repr or a validation
# message never shows them.

BuiltinRoleName = Literal["operator_admin", "dealer_admin", "dealer_technician",
                          "customer_admin", "customer_viewer"]
"""The built-in roles a directory group or SSO provider may grant (tenancy.permissions;
a test keeps the two lists equal).  Custom roles are per tenant and managed in the UI."""

LdapGroupType = Literal["groupOfNames", "nestedGroupOfNames", "groupOfUniqueNames",
                        "posixGroup", "activeDirectory", "nestedActiveDirectory"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _is_loopback_host(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: traffic that never leaves the machine."""
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_dn(value: str, what: str) -> str:
    """A syntactically valid DN (python-ldap's parser), so a typo fails at start-up
    instead of as "user not found" at the first login."""
    import ldap.dn  # type: ignore[import-untyped]

    value = value.strip()
    try:
        parts = ldap.dn.str2dn(value)
    except ldap.DECODING_ERROR:
        raise ValueError(f"{what} is not a valid LDAP DN") from None
    if not parts:
        raise ValueError(f"{what} must not be empty")
    return value


def _check_filter(value: str, *, needs_user: bool) -> str:
    """An LDAP filter in parentheses, balanced, with ``%(user)s`` where the login goes."""
    value = value.strip()
    depth = 0
    for ch in value:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if not (value.startswith("(") and value.endswith(")")) or depth != 0:
        raise ValueError("must be an LDAP filter in balanced parentheses, e.g. (uid=%(user)s)")
    if needs_user and "%(user)s" not in value:
        raise ValueError("must contain %(user)s where the login name goes, e.g. (uid=%(user)s)")
    return value


class LdapGroupMapping(_Section):
    """One directory group and the membership its members get."""

    group: str
    """The group's DN, e.g. ``cn=fleet-admins,ou=groups,dc=example,dc=org``."""
    tenant: int | str
    """The tenant: its id (``12``) or its names from the top (``Dealer/Customer``)."""
    role: BuiltinRoleName

    @field_validator("group")
    @classmethod
    def _dn(cls, v: str) -> str:
        return _check_dn(v, "group")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: int | str) -> int | str:
        if isinstance(v, str) and not v.strip(" /"):
            raise ValueError("must be a tenant id or its names from the top, "
                             "e.g. 'Dealer/Customer'")
        return v


class LdapAttributeMap(_Section):
    """Which directory attribute fills which user field (updated at every login)."""

    first_name: str = "givenName"
    last_name: str = "sn"
    email: str = "mail"


class LdapConfig(_Section):
    """Log in with a directory password (OpenLDAP, Active Directory) through django-auth-ldap.

    Users are found by ``user_search_filter`` under ``user_search_base`` with the
    service account (``bind_dn``), then bound with their own password.  They are
    mapped to Fleetroom users by ``subject_attribute`` (``entryUUID``; on Active
    Directory ``objectGUID``), which survives renames and moves — never by DN.
    """

    server_uri: str
    """``ldaps://dc1.example.com`` (several, space-separated, are tried in turn)."""
    bind_dn: str = ""
    """The service account that searches; empty means an anonymous search."""
    bind_password: SecretStr = SecretStr("")
    user_search_base: str
    user_search_filter: str = "(uid=%(user)s)"
    """AD: ``(sAMAccountName=%(user)s)``; also by e-mail: ``(|(uid=%(user)s)(mail=%(user)s))``."""
    username_attribute: str = "uid"
    """The attribute that becomes the Fleetroom username (AD: ``sAMAccountName``)."""
    subject_attribute: str = "entryUUID"
    """The stable identifier of the entry (AD: ``objectGUID``)."""
    start_tls: bool = False
    ca_file: Path | None = None
    """PEM file with the CA that signed the server's certificate (ldaps:// and StartTLS)."""
    allow_plaintext: bool = False
    """Permit ldap:// without StartTLS to a host other than this machine (passwords
    would cross the network in clear text)."""
    timeout_seconds: int = Field(10, ge=1, le=120)
    group_search_base: str = ""
    group_search_filter: str = ""
    """Narrows the group search; empty means every group of ``group_type``'s class."""
    group_type: LdapGroupType = "groupOfNames"
    groups: list[LdapGroupMapping] = Field(default_factory=list)
    """Which groups give which membership; the first mapping per tenant wins, so list
    stronger roles first.  Someone in none of them can log in but sees nothing: to
    keep them out, narrow ``user_search_filter`` (e.g. with ``memberOf``)."""
    attributes: LdapAttributeMap = Field(default_factory=LdapAttributeMap)
    link_existing_by_email: bool = False
    """Link a first directory login to an existing Fleetroom account with the same
    e-mail address (which then loses its local password).  Off: such a login is
    refused and an administrator decides."""

    @field_validator("server_uri")
    @classmethod
    def _uris(cls, v: str) -> str:
        uris = v.split()
        if not uris:
            raise ValueError("must name at least one server, e.g. ldaps://dc1.example.com")
        for uri in uris:
            if not re.fullmatch(r"(ldap|ldaps|ldapi)://\S*", uri):
                raise ValueError(f"{uri!r} must start with ldap://, ldaps:// or ldapi://")
        return " ".join(uris)

    @field_validator("bind_dn")
    @classmethod
    def _bind_dn(cls, v: str) -> str:
        return _check_dn(v, "bind_dn") if v.strip() else ""

    @field_validator("user_search_base")
    @classmethod
    def _user_base(cls, v: str) -> str:
        return _check_dn(v, "user_search_base")

    @field_validator("group_search_base")
    @classmethod
    def _group_base(cls, v: str) -> str:
        return _check_dn(v, "group_search_base") if v.strip() else ""

    @field_validator("user_search_filter")
    @classmethod
    def _user_filter(cls, v: str) -> str:
        return _check_filter(v, needs_user=True)

    @field_validator("group_search_filter")
    @classmethod
    def _group_filter(cls, v: str) -> str:
        return _check_filter(v, needs_user=False) if v.strip() else ""

    @field_validator("username_attribute", "subject_attribute")
    @classmethod
    def _attribute_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", v):
            raise ValueError("must be an LDAP attribute name, e.g. uid")
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"CA file {v} does not exist")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> LdapConfig:
        if self.groups and not self.group_search_base:
            raise ValueError("groups are mapped, so group_search_base must name where the "
                             "groups are")
        if self.bind_dn and not self.bind_password.get_secret_value():
            raise ValueError("bind_dn is set but bind_password is empty (set it here or in "
                             "FLEETROOM_SSO_LDAP_BIND_PASSWORD)")
        if not self.start_tls and not self.allow_plaintext:
            for uri in self.server_uri.split():
                host = re.sub(r":\d+$", "", uri.split("://", 1)[1].split("/", 1)[0])
                if uri.startswith("ldap://") and not _is_loopback_host(host):
                    raise ValueError(f"{uri} would send passwords in clear text: use "
                                     "ldaps://, or start_tls = true")
        seen: set[str] = set()
        for mapping in self.groups:
            key = mapping.group.lower()
            if key in seen:
                raise ValueError(f"group {mapping.group} is mapped twice; one group grants "
                                 "one membership")
            seen.add(key)
        return self


class OidcProviderConfig(_Section):
    """One OpenID Connect provider (Entra ID, Keycloak, ADFS, Google Workspace, …).

    The authorization-code flow with PKCE, through django-allauth.  A first login
    creates a Fleetroom user with ``default_role`` on ``tenant``; later logins update
    the name and e-mail address.  Nobody else can sign up.
    """

    id: str
    """Short name in URLs and the database (``/accounts/oidc/<id>/login/``); never change it."""
    name: str
    """Shown on the login button: "Sign in with <name>"."""
    issuer: str
    """Exactly as the provider's discovery document says (``https://…``)."""
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    tenant: int | str
    """The tenant new users are mapped to: its id, or its names from the top."""
    default_role: BuiltinRoleName = "customer_viewer"
    allowed_email_domains: list[str] = Field(min_length=1)
    """Only these e-mail domains may sign in; ``["*"]`` allows any."""
    require_email_verified: bool = True
    """Trust an address only when the provider says ``email_verified`` (turn off for
    providers that never send the claim, such as Entra ID)."""
    link_existing_by_email: bool = False
    """Link a first login to an existing account with the same (verified) address,
    which then loses its local password.  Off: such a login is refused."""
    token_auth_method: Literal["client_secret_basic", "client_secret_post"] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", v):
            raise ValueError("must be 1-40 lower-case letters, digits, - or _")
        if v == "ldap":
            raise ValueError("'ldap' is reserved for the directory login")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty (it is shown on the login button)")
        return v.strip()

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be the provider's https:// issuer URL")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment")
        if parts.scheme == "http" and not _is_loopback_host(parts.hostname):
            # Tokens from the token endpoint are trusted because TLS authenticated the
            # issuer (OpenID Connect Core 3.1.3.7): plain http only on this machine.
            raise ValueError("must use https:// (plain http only for a provider on this "
                             "machine)")
        return v

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, v: list[str]) -> list[str]:
        if "openid" not in v:
            raise ValueError("must include 'openid'")
        if any(not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", s) for s in v):
            raise ValueError("scopes are single words without spaces or quotes")
        return v

    @field_validator("allowed_email_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for raw in v:
            d = raw.strip().lower().lstrip("@")
            if d != "*" and not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", d):
                raise ValueError(f"{d!r} is not a domain (e.g. example.com, or '*' for any)")
            out.append(d)
        return out


class SsoConfig(_Section):
    """Single sign-on: ``[sso.ldap]`` and any number of ``[[sso.oidc]]`` providers."""

    ldap: LdapConfig | None = None
    oidc: list[OidcProviderConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> SsoConfig:
        ids = [p.id for p in self.oidc]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"two [[sso.oidc]] providers have the id {', '.join(dupes)}")
        return self


_SSO_LDAP_ENV_SKIP = frozenset({"groups", "attributes"})
_SSO_OIDC_SECRET_RE = re.compile(r"FLEETROOM_SSO_OIDC_([A-Z0-9_]+)_CLIENT_SECRET")


def _sso_env_id(provider_id: str) -> str:
    return provider_id.upper().replace("-", "_")


def _sso_from_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``FLEETROOM_SSO_LDAP_<KEY>`` for the ``[sso.ldap]`` scalars and lists, and
    ``FLEETROOM_SSO_OIDC_<ID>_CLIENT_SECRET`` for a provider's secret (the provider
    itself is defined in the file).  Returns the LDAP values and the secrets by id."""
    ldap_known = {f"FLEETROOM_SSO_LDAP_{name.upper()}": (name, field.annotation)
                  for name, field in LdapConfig.model_fields.items()
                  if name not in _SSO_LDAP_ENV_SKIP}
    ldap_values: dict[str, Any] = {}
    secrets_by_id: dict[str, str] = {}
    for key, raw in env.items():
        if key != "FLEETROOM_SSO" and not key.startswith("FLEETROOM_SSO_"):
            continue
        if key in ldap_known:
            name, annotation = ldap_known[key]
            try:
                ldap_values[name] = _env_value(raw, annotation)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from exc
            continue
        match = _SSO_OIDC_SECRET_RE.fullmatch(key)
        if match:
            secrets_by_id[match[1]] = raw
            continue
        raise ConfigError(f"unknown environment variable {key} (SSO settings from the "
                          "environment: FLEETROOM_SSO_LDAP_<KEY> and "
                          "FLEETROOM_SSO_OIDC_<ID>_CLIENT_SECRET; the rest goes in "
                          "[sso] of the config file)")
    return ldap_values, secrets_by_id


def _merge_sso_env(merged: dict[str, Any], env: Mapping[str, str]) -> None:
    """Fold the SSO environment variables into the file's ``[sso]`` data (in place)."""
    ldap_values, secrets_by_id = _sso_from_env(env)
    if not ldap_values and not secrets_by_id:
        return
    sso = merged.get("sso", {})
    if not isinstance(sso, dict):
        return  # not a table: validation reports it
    sso = dict(sso)
    if ldap_values:
        current = sso.get("ldap") or {}
        if isinstance(current, dict):
            sso["ldap"] = {**current, **ldap_values}
    providers = sso.get("oidc", [])
    by_env_id = {_sso_env_id(str(p.get("id", ""))): i for i, p in enumerate(providers)
                 if isinstance(p, dict)} if isinstance(providers, list) else {}
    for env_id, secret in secrets_by_id.items():
        if env_id not in by_env_id:
            raise ConfigError(f"FLEETROOM_SSO_OIDC_{env_id}_CLIENT_SECRET: no [[sso.oidc]] "
                              "provider with that id in the config file")
        i = by_env_id[env_id]
        providers = [*providers]
        providers[i] = {**providers[i], "client_secret": secret}
    if secrets_by_id:
        sso["oidc"] = providers
    merged["sso"] = sso

# --- end SSO -------------------------------------------------------------------------------


class Config(_Section):
    """Everything the server reads at start-up."""

    data_dir: Path
    secret_key: str = Field(min_length=50)
    debug: bool = False
    bind: str = "127.0.0.1:8000"
    tls_cert: Path | None = None
    """Certificate chain (PEM) for HTTPS on ``bind`` and ``agents_bind``."""
    tls_key: Path | None = None
    web_tls: bool = True
    """With certificates set, whether ``bind`` uses them too (``false``: the web UI
    stays plain HTTP, e.g. on loopback behind a TLS-terminating proxy)."""
    agents_url: str | None = None
    """The address agents enroll with (shown with new tokens); default ``base_url``.
    Set it when agents come in through ``agents_bind`` or another name."""
    agents_bind: str | None = None
    """A second listener, HTTPS only, for agents (e.g. ``0.0.0.0:8443``): the web UI
    can stay on a private address while agents reach the server from outside."""
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"])
    base_url: str = "http://127.0.0.1:8000"
    language: Literal["de", "en"] = "en"
    time_zone: str = "Europe/Berlin"
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    mail: MailConfig = Field(default_factory=MailConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    sso: SsoConfig = Field(default_factory=SsoConfig)  # SSO (see the SSO block above)
    mail_intake: MailIntakeConfig = Field(default_factory=MailIntakeConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)

    @model_validator(mode="after")
    def _tls_complete(self) -> Config:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.agents_bind and self.tls_cert is None:
            raise ValueError("agents_bind serves HTTPS only: set tls_cert and tls_key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file not found: {path}")
        return self


_BOOL = {"true": True, "false": False}


def _env_value(raw: str, annotation: Any) -> Any:
    """Parse an environment string for a field: strict booleans, ints, comma lists."""
    text = str(annotation)
    if annotation is bool or text == "bool":
        if raw.lower() not in _BOOL:
            raise ValueError(f"must be true or false, not {raw!r}")
        return _BOOL[raw.lower()]
    if "list[" in text:
        return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Every field whose type is a section is a [section]; a new section needs no edit here.
    sections: dict[str, type[BaseModel]] = {
        name: field.annotation for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Section)}
    known: dict[str, tuple[str | None, str, Any]] = {}
    for name, field in Config.model_fields.items():
        if name not in sections:
            known[f"FLEETROOM_{name.upper()}"] = (None, name, field.annotation)
    for section_name, model in sections.items():
        for name, field in model.model_fields.items():
            known[f"FLEETROOM_{section_name.upper()}_{name.upper()}"] = (
                section_name, name, field.annotation)
    for key, raw in env.items():
        if not key.startswith("FLEETROOM_") or key.startswith(NOT_SERVER_PREFIXES):
            continue
        if key == "FLEETROOM_SSO" or key.startswith("FLEETROOM_SSO_"):
            continue  # SSO: _sso_from_env
        if key not in known:
            raise ConfigError(f"unknown environment variable {key} (see the README for the "
                              "list of settings)")
        section, name, annotation = known[key]
        try:
            value = _env_value(raw, annotation)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
        if section is None:
            out[name] = value
        else:
            out.setdefault(section, {})[name] = value
    return out


def data_dir_from(env: Mapping[str, str]) -> Path:
    """``FLEETROOM_DATA_DIR`` or ``./data``, absolute."""
    return Path(env.get("FLEETROOM_DATA_DIR", "data")).resolve()


def load(env: Mapping[str, str] | None = None) -> Config:
    """The configuration from the data directory's TOML file and the environment."""
    env = os.environ if env is None else env
    data_dir = data_dir_from(env)
    path = data_dir / CONFIG_FILE
    file_data: dict[str, Any] = {}
    if path.exists():
        try:
            file_data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    env_data = _from_env(env)
    merged: dict[str, Any] = {**file_data, "data_dir": data_dir}
    for key, value in env_data.items():
        if isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    _merge_sso_env(merged, env)  # SSO
    if "secret_key" not in merged:
        raise ConfigError(f"no secret key: run `fleetroom init` to create {path}, or set "
                          "FLEETROOM_SECRET_KEY")
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration ({path} and FLEETROOM_* variables): "
                          f"{problems}") from exc


def starter_toml() -> str:
    """A commented starter file with a fresh secret (written by ``fleetroom init``)."""
    return f'''# Fleetroom server configuration. Environment variables override these
# (FLEETROOM_<KEY>, FLEETROOM_<SECTION>_<KEY>). Unknown keys are an error.
secret_key = "{secrets.token_urlsafe(64)}"
# bind = "127.0.0.1:8000"
# tls_cert = "/etc/fleetroom/server.pem"   # HTTPS on bind (and agents_bind); see
# tls_key = "/etc/fleetroom/server.key"    #   `fleetroom tls-selfsigned` for a private CA
# web_tls = true                           # false: only agents_bind uses the certificate
# agents_bind = "0.0.0.0:8443"             # a second, HTTPS-only listener for agents
# agents_url = "https://fleet.example.com:8443"   # what agents enroll with (default base_url)
# base_url = "https://fleet.example.com"
# allowed_hosts = ["fleet.example.com"]
# language = "de"

[database]
# url = "postgresql://fleetroom@127.0.0.1:5432/fleetroom"   # default: SQLite in this directory

[worker]
# backend = "sqlite"     # sqlite | postgres | redis
# workers = 2

[security]
# https = true           # behind TLS: secure cookies, HSTS, redirect
# trusted_proxies = false
# session_idle_minutes = 30
# session_absolute_hours = 12
# deactivate_after_days = 90
# deactivate_after_days_by_role = {{ customer_viewer = 180 }}
# mfa_required_for_all = false   # operator and dealer roles always need a second factor

[fleet]
# raw_retention_days = 90
# not_reporting_hours = 24

[mail]
# host = "smtp.example.com"      # without a host, mail is written to files in <data_dir>/mail
# port = 587
# security = "starttls"          # starttls | tls | none
# user = "fleetroom"
# password = "…"                 # or FLEETROOM_MAIL_PASSWORD
# from_address = "Fleetroom <fleetroom@example.com>"

[api]
# token_default_days = 90
# token_max_days = 365
# rate = "600/m"                 # requests per user and minute (s, m, h, d)

[agents]
# agent_rate = "120/m"           # requests per agent (429 + Retry-After beyond)
# tenant_rate = "6000/m"         # requests of all agents of one site or customer
# max_backlog_batches = 5000     # unprocessed batches before new ones get 503
# token_default_hours = 24       # enrollment token lifetime

[cache]
# backend = "database"           # database | redis (shared by every process)
# redis_url = "redis://127.0.0.1:6379/1"

[mail_intake]
# address = "fleetroom-intake@example.com"   # offered to agents at enrollment
# listen = "0.0.0.0:2525"        # agents' mail, SMTP receiver (STARTTLS with tls_cert)
# imap_host = "imap.example.com" # or: poll a mailbox over IMAPS
# imap_user = "fleetroom-intake"
# imap_password = "…"            # or FLEETROOM_MAIL_INTAKE_IMAP_PASSWORD

[mqtt]
# url = "mqtts://mqtt.example.com:8883"   # the broker (docs/mqtt.md); empty: MQTT off
# agent_url = "wss://mqtt.example.com/mqtt"   # what agents use (default: url)
# ca_file = "/etc/fleetroom/mqtt-ca.pem"
# bridge_password = "…"          # or FLEETROOM_MQTT_BRIDGE_PASSWORD
# admin_password = "…"           # dynsec admin; or FLEETROOM_MQTT_ADMIN_PASSWORD

# Single sign-on (optional).  Secrets may come from the environment instead:
# FLEETROOM_SSO_LDAP_BIND_PASSWORD, FLEETROOM_SSO_OIDC_<ID>_CLIENT_SECRET.
# [sso.ldap]
# server_uri = "ldaps://dc1.example.com"
# bind_dn = "cn=fleetroom,ou=services,dc=example,dc=com"
# bind_password = "…"
# user_search_base = "ou=people,dc=example,dc=com"
# user_search_filter = "(uid=%(user)s)"        # AD: (sAMAccountName=%(user)s)
# username_attribute = "uid"                    # AD: sAMAccountName
# subject_attribute = "entryUUID"               # AD: objectGUID
# ca_file = "/etc/ssl/certs/company-ca.pem"
# group_search_base = "ou=groups,dc=example,dc=com"
# group_type = "groupOfNames"                   # AD: activeDirectory
# [[sso.ldap.groups]]
# group = "cn=fleet-admins,ou=groups,dc=example,dc=com"
# tenant = "Dealer/Customer"                    # or the tenant id
# role = "customer_admin"
#
# [[sso.oidc]]
# id = "corp"
# name = "Example Corp"
# issuer = "https://login.example.com/realms/corp"
# client_id = "fleetroom"
# client_secret = "…"
# tenant = "Dealer/Customer"
# default_role = "customer_viewer"
# allowed_email_domains = ["example.com"]
'''

"""Directory login (LDAP bind) as an authentication backend behind the login form.

Listed after :class:`~fleetroom.accounts.lockout.LockoutBackend` in
``AUTHENTICATION_BACKENDS`` (see :mod:`.conf`), so a directory login is the same
path as a local one: a locked name never reaches the directory, a wrong
directory password is a failed login that counts toward the lockout (Django's
``user_login_failed``), and allauth's MFA stage follows a right one.

django-auth-ldap does the LDAP work (search with the service account, bind as
the user, find the groups).  What the library would do with the result — find a
Django user *by username* and copy attributes onto it — is replaced here by
:func:`fleetroom.accounts.sso.services.ldap_login`, which maps by the entry's
``entryUUID``/``objectGUID``: matching by username would hand an existing local
account (say ``admin``) to whoever has that name in the directory.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import ldap  # type: ignore[import-untyped]
import ldap.filter  # type: ignore[import-untyped]
from django_auth_ldap.backend import LDAPBackend, _LDAPUser  # type: ignore[import-untyped]
from django_auth_ldap.config import LDAPSearch  # type: ignore[import-untyped]

from fleetroom.accounts.sso import services
from fleetroom.accounts.sso.conf import normalise_dn

if TYPE_CHECKING:
    from fleetroom.accounts.models import User
    from fleetroom.config import LdapConfig

logger = logging.getLogger(__name__)


def _first(attrs: Any, name: str) -> Any:
    """The first value of attribute ``name`` (case-insensitive), or ``None``."""
    values = attrs.get(name) if attrs is not None else None
    return values[0] if values else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()


def subject_value(value: Any, attribute: str) -> str | None:
    """The stable subject as text: ``entryUUID`` as it is (lower case); Active
    Directory's binary ``objectGUID`` as the GUID string Windows shows (its first
    three fields are little-endian).  django-auth-ldap decodes every value it can as
    UTF-8, so a GUID may arrive as ``str`` and is turned back into its bytes."""
    if value is None:
        return None
    raw: bytes | None = None
    if isinstance(value, bytes):
        raw = value
    elif attribute.lower() == "objectguid":
        raw = str(value).encode("utf-8")
    if raw is not None:
        return str(uuid.UUID(bytes_le=raw)) if len(raw) == 16 else raw.hex()
    text = str(value).strip().lower()
    return text or None


def subject_filter(subject: str, attribute: str) -> str:
    """An LDAP filter matching the entry with this subject (binary for objectGUID)."""
    if attribute.lower() == "objectguid":
        try:
            raw = uuid.UUID(subject).bytes_le
        except ValueError:
            raw = bytes.fromhex(subject)
        escaped = "".join(f"\\{b:02x}" for b in raw)
        return f"({attribute}={escaped})"
    return f"({attribute}={ldap.filter.escape_filter_chars(subject)})"


def read_entry(ldap_user: Any, cfg: LdapConfig) -> services.DirectoryEntry:
    """Everything a login needs from the directory, read before any database write.

    Raises the library's ``AuthenticationFailed`` when the entry lacks its subject
    attribute: without a stable identifier there is no safe way to map the person.
    """
    attrs = ldap_user.attrs
    subject = subject_value(_first(attrs, cfg.subject_attribute), cfg.subject_attribute)
    if not subject:
        logger.error("LDAP entry %s has no %s; set [sso.ldap] subject_attribute (OpenLDAP: "
                     "entryUUID, Active Directory: objectGUID)", ldap_user.dn,
                     cfg.subject_attribute)
        raise ldap_user.AuthenticationFailed("no subject attribute")
    groups: frozenset[str] = frozenset()
    if cfg.groups and cfg.group_search_base:
        groups = frozenset(normalise_dn(dn) for dn in ldap_user.group_dns)
    return services.DirectoryEntry(
        dn=str(ldap_user.dn),
        subject=subject,
        username=_text(_first(attrs, cfg.username_attribute)) or str(ldap_user._username),
        email=_text(_first(attrs, cfg.attributes.email)),
        first_name=_text(_first(attrs, cfg.attributes.first_name)),
        last_name=_text(_first(attrs, cfg.attributes.last_name)),
        groups=groups,
    )


class LdapBackend(LDAPBackend):  # type: ignore[misc]
    """django-auth-ldap with Fleetroom's identity mapping (see the module docstring)."""

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[User, bool]:
        """The library's hook after a successful bind: map the entry to our user.

        Returns ``built=False`` because :func:`~.services.ldap_login` already saved a
        new user (with an unusable password) together with its identity.
        """
        cfg = services.ldap_config()
        if cfg is None:
            raise ldap_user.AuthenticationFailed("LDAP is not configured")
        entry = read_entry(ldap_user, cfg)
        try:
            # The library keeps the request on its per-login helper object only.
            user = services.ldap_login(entry, request=ldap_user._request)
        except services.SsoRefused as exc:
            logger.warning("LDAP login of %s refused: %s (%s)", entry.dn, exc.reason,
                           exc.detail)
            raise ldap_user.AuthenticationFailed(exc.reason) from exc
        return user, False

    def ldap_to_django_username(self, username: str) -> str:
        """Unused for mapping (we map by subject); kept as the library's identity."""
        return username

    @contextmanager
    def service_connection(self) -> Iterator[DirectoryConnection]:
        """A connection bound as the service account, with the same options, TLS and
        CA file as a login's (for the directory sync)."""
        conn = ldap.initialize(self.settings.SERVER_URI)
        try:
            for opt, value in self.settings.CONNECTION_OPTIONS.items():
                conn.set_option(opt, value)
            if self.settings.START_TLS:
                conn.start_tls_s()
            conn.simple_bind_s(self.settings.BIND_DN, self.settings.BIND_PASSWORD)
            yield DirectoryConnection(self, conn)
        finally:
            conn.unbind_s()


class DirectoryConnection:
    """Searches the directory sync needs, on one service-bound connection."""

    def __init__(self, backend: LdapBackend, conn: Any) -> None:
        self.backend = backend
        self.conn = conn

    def find_subject(self, subject: str, cfg: LdapConfig) -> list[tuple[str, Any]]:
        """Entries with this subject that a login would also find: the login filter
        with any name (``%(user)s`` → ``*``), so an account the filter now excludes
        (say, disabled in Active Directory) counts as gone."""
        login_filter = cfg.user_search_filter.replace("%(user)s", "*")
        search = LDAPSearch(cfg.user_search_base, ldap.SCOPE_SUBTREE,
                            f"(&{login_filter}{subject_filter(subject, cfg.subject_attribute)})",
                            ["*", cfg.subject_attribute])
        results: list[tuple[str, Any]] | None = search.execute(self.conn, escape=False)
        if results is None:
            # The library swallows search errors into None; "gone" needs an answer.
            raise ldap.LDAPError(f"directory search for {subject} failed")
        return results

    def directory_user(self, dn: str, attrs: Any, cfg: LdapConfig) -> Any:
        """The library's per-user helper for an entry we already found, on this
        connection, so its group lookup (``group_dns``) works as at login."""
        ldap_user = _LDAPUser(self.backend,
                              username=_text(_first(attrs, cfg.username_attribute)) or dn)
        # Pre-filled so the library does not search again by username.
        ldap_user._user_dn = dn
        ldap_user._user_attrs = attrs
        ldap_user._connection = self.conn
        ldap_user._connection_bound = True
        return ldap_user

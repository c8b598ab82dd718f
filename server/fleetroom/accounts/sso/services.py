"""Every write SSO makes: users behind external identities, and their memberships.

The rules, for both LDAP and OpenID Connect:

* **Who is who.**  A person is ``(provider, subject)`` — the directory entry's
  ``entryUUID``/``objectGUID`` or the OIDC ``sub`` — never a name or an address,
  which can be reassigned.  :class:`~fleetroom.accounts.models.ExternalIdentity`
  holds the mapping.
* **First login** creates the user (no usable local password: the directory or
  the provider stays the only way in) and grants the mapped membership through
  :func:`fleetroom.tenancy.services.do_grant_membership` with the SYSTEM actor, so
  it is audited like any grant.  An existing account with the same e-mail address
  or username is *not* taken over unless the configuration says
  ``link_existing_by_email`` (and, for OIDC, the provider verified the address):
  otherwise the login is refused and an administrator decides.
* **Later logins** update name and e-mail address, and — for LDAP — bring the
  group-derived memberships in line with the directory: a user removed from a
  mapped group loses that membership.  Memberships granted by hand are never
  touched (:class:`~fleetroom.accounts.models.ExternalMembership` marks the others).
* **Removed from the directory**: :func:`sync_ldap_directory` (a periodic job)
  revokes the group-derived memberships and ends the sessions of identities the
  directory no longer has; such a user cannot log in anyway (no local password).

User creation and membership changes are separate transactions on purpose: the
audit log locks one hash chain per transaction (the platform chain for account
events, the tenant's chain for memberships), and one failed grant must not undo
the account — the next login repairs the memberships.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from fleetroom.accounts import audit_events
from fleetroom.accounts.models import ExternalIdentity, ExternalMembership, User

if TYPE_CHECKING:
    from django.utils.functional import _StrPromise

    from fleetroom.config import LdapConfig, OidcProviderConfig, SsoConfig
    from fleetroom.tenancy.models import Tenant

logger = logging.getLogger(__name__)

LDAP_PROVIDER = "ldap"


class SsoRefused(Exception):
    """This SSO login may not go ahead; ``reason`` is a code for the audit log and
    ``message`` what the person is told (never more than they already know)."""

    MESSAGES: Mapping[str, _StrPromise] = {
        "account_exists": _("An account with your e-mail address or user name already exists "
                            "here. Ask your administrator to link it to your sign-in."),
        "no_email": _("Your sign-in did not provide a confirmed e-mail address, which "
                      "Fleetroom needs. Ask your administrator for help."),
        "email_domain": _("Your e-mail address is not from a domain that may sign in here."),
        "invalid_username": _("Your user name cannot be used here. Ask your administrator "
                              "for help."),
        "connect_not_allowed": _("Sign-in methods are linked by your administrator."),
        "unknown_provider": _("This sign-in method is not configured."),
        "unavailable": _("Signing in is not possible right now. Please try again later or "
                         "ask your administrator."),
    }

    def __init__(self, reason: str, detail: str = "", *, user: User | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        """For the log and audit only (e.g. which account collided); never shown."""
        self.user = user
        """The existing account involved, if any (audit target)."""

    @property
    def message(self) -> _StrPromise:
        """What the person is shown."""
        return self.MESSAGES.get(self.reason, self.MESSAGES["unavailable"])


@dataclass(frozen=True)
class DirectoryEntry:
    """What one LDAP login tells us about the person (read before any database write,
    so no transaction waits on the directory)."""

    dn: str
    subject: str
    username: str
    email: str
    first_name: str
    last_name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    """Normalised DNs of the person's groups (:func:`.conf.normalise_dn`)."""


# --- configuration lookups -------------------------------------------------------------

def sso_config() -> SsoConfig:
    """The SSO configuration in force (``settings.FLEETROOM_SSO``)."""
    cfg: SsoConfig = settings.FLEETROOM_SSO
    return cfg


def ldap_config() -> LdapConfig | None:
    """``[sso.ldap]``, or ``None`` when the directory login is not configured."""
    return sso_config().ldap


def oidc_provider(provider_id: str) -> OidcProviderConfig | None:
    """The ``[[sso.oidc]]`` entry with this id, or ``None``."""
    return next((p for p in sso_config().oidc if p.id == provider_id), None)


def resolve_tenant(spec: int | str) -> Tenant | None:
    """A configured tenant reference: an id (``12``), a materialised path
    (``/1/5/12/``) or names from the top (``Dealer/Customer``; the operator may be
    left out).  ``None`` (and an error in the log) when it names no tenant or several:
    a configuration mistake must not grant the wrong tenant."""
    from fleetroom.tenancy.models import Tenant

    text = str(spec).strip()
    found: Tenant | None
    if text.isdigit():
        found = Tenant.objects.filter(pk=int(text)).first()
    elif re.fullmatch(r"(/\d+)+/", text):
        found = Tenant.objects.filter(path=text).first()
    else:
        names = [n.strip() for n in text.strip("/").split("/") if n.strip()]
        candidates = list(Tenant.objects.filter(name=names[0], depth__lte=1)) if names else []
        for name in names[1:]:
            candidates = list(Tenant.objects.filter(parent__in=candidates, name=name))
        if len(candidates) > 1:
            logger.error("SSO: tenant %r is ambiguous; use the tenant id in [sso]", text)
            return None
        found = candidates[0] if candidates else None
    if found is None:
        logger.error("SSO: [sso] names tenant %r, which does not exist", text)
    return found


# --- small helpers ---------------------------------------------------------------------

def is_sso_managed(user: Any) -> bool:
    """True when the user signs in through a directory or provider (and so has no
    password of their own here)."""
    if getattr(user, "pk", None) is None:
        return False
    return bool(ExternalIdentity.objects.filter(user_id=user.pk).exists())


def email_domain_allowed(email: str, allowed: Iterable[str]) -> bool:
    """True when the address's domain is in ``allowed`` (or ``allowed`` has ``*``)."""
    domains = set(allowed)
    if "*" in domains:
        return True
    _local, at, domain = email.rpartition("@")
    return bool(at) and domain.lower() in domains


def audit_refusal(exc: SsoRefused, *, provider: str, subject: str = "",
                  request: HttpRequest | None = None) -> None:
    """Write the audit event for a refused SSO login (outside the refused transaction,
    so the record survives its rollback)."""
    audit_events.record(audit_events.SSO_LOGIN_REFUSED, actor=None, target=exc.user,
                        request=request, data={"provider": provider, "subject": subject,
                                               "reason": exc.reason,
                                               "detail": exc.detail[:500]})


def _clean_username(name: str) -> str | None:
    """``name`` when it is a valid Fleetroom username, else ``None``."""
    name = name.strip()
    if not name or len(name) > User._meta.get_field("username").max_length:  # type: ignore[operator]
        return None
    try:
        User.username_validator(name)
    except ValidationError:
        return None
    return name


def _update_attributes(user: User, *, email: str | None, first_name: str | None,
                       last_name: str | None, username: str | None = None,
                       request: HttpRequest | None = None, provider: str) -> list[str]:
    """Copy what the directory/provider says onto the user; returns the changed fields.

    An address or username that another account already has is left alone (and
    logged): uniqueness is the database's, and a clash is an administrator's call.
    """
    changed: list[str] = []
    for name, value in (("first_name", first_name), ("last_name", last_name)):
        if value is not None and getattr(user, name) != value[:150]:
            setattr(user, name, value[:150])
            changed.append(name)
    if email and email.lower() != (user.email or "").lower():
        if User.objects.filter(email__iexact=email).exclude(pk=user.pk).exists():
            logger.warning("SSO (%s): user %s's new address is another account's; kept "
                           "the old one", provider, user.pk)
        else:
            user.email = email
            changed.append("email")
    if username and username != user.username:
        clean = _clean_username(username)
        if clean is None or User.objects.filter(username__iexact=clean).exclude(
                pk=user.pk).exists():
            logger.warning("SSO (%s): user %s was renamed in the directory, but the new "
                           "name cannot be used here; kept the old one", provider, user.pk)
        else:
            user.username = clean
            changed.append("username")
    if changed:
        user.save(update_fields=changed)
        audit_events.record(audit_events.SSO_USER_UPDATED, actor=None, target=user,
                            request=request, data={"provider": provider, "fields": changed})
    return changed


def _link_existing(user: User, *, provider: str, request: HttpRequest | None) -> None:
    """Turn an existing account into an SSO one: its local password stops working."""
    if user.has_usable_password():
        user.set_unusable_password()
        user.save(update_fields=["password"])
    logger.info("SSO (%s): linked existing user %s by e-mail address", provider, user.pk)


# --- memberships -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Wanted:
    tenant: Tenant
    role: str
    source: str


def _apply_memberships(identity: ExternalIdentity, wanted: Mapping[int, _Wanted], *,
                       keep_sources: frozenset[str] = frozenset(),
                       revoke_others: bool,
                       request: HttpRequest | None) -> None:
    """Make the identity's external memberships match ``wanted`` (tenant id → grant).

    Memberships from a source in ``keep_sources`` (a mapping whose tenant could not
    be resolved: a configuration problem, not a directory change) are kept.  Each
    change is its own service call and transaction.
    """
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.tenancy import services as tenancy_services
    from fleetroom.tenancy.models import Membership

    remaining = dict(wanted)
    for em in (ExternalMembership.objects.filter(identity=identity)
               .select_related("membership__tenant").order_by("pk")):
        m = em.membership
        want = remaining.pop(m.tenant_id, None)
        if want is None:
            if revoke_others and em.source not in keep_sources:
                tenancy_services.do_revoke_membership(m, acting_user=SYSTEM, request=request)
            continue
        if m.role != want.role or m.custom_role_id is not None or m.permissions \
                or m.site_restricted:
            tenancy_services.do_change_membership(m, acting_user=SYSTEM, role=want.role,
                                                  sites=None, request=request)
        if em.source != want.source:
            em.source = want.source
            em.save(update_fields=["source"])
    for want in remaining.values():
        if Membership.objects.filter(user_id=identity.user_id, tenant=want.tenant,
                                     via_access_code__isnull=True).exists():
            continue  # granted by hand: an administrator's, not ours to manage
        try:
            with transaction.atomic():
                m = tenancy_services.do_grant_membership(
                    identity.user, want.tenant, acting_user=SYSTEM, role=want.role,
                    request=request)
                ExternalMembership.objects.create(identity=identity, membership=m,
                                                  source=want.source)
        except ValidationError as exc:
            logger.warning("SSO: could not grant %s on tenant %s to user %s: %s",
                           want.role, want.tenant.pk, identity.user_id, "; ".join(exc.messages))


def _ldap_wanted(cfg: LdapConfig, groups: frozenset[str]) -> tuple[dict[int, _Wanted],
                                                                    frozenset[str]]:
    """Tenant id → membership the directory groups call for (first mapping per tenant
    wins, so list stronger roles first), and the sources whose tenant is unknown."""
    from fleetroom.accounts.sso.conf import normalise_dn

    wanted: dict[int, _Wanted] = {}
    unresolved: set[str] = set()
    for mapping in cfg.groups:
        source = normalise_dn(mapping.group)
        tenant = resolve_tenant(mapping.tenant)
        if tenant is None:
            unresolved.add(source)
            continue
        if source in groups and tenant.pk not in wanted:
            wanted[tenant.pk] = _Wanted(tenant=tenant, role=mapping.role, source=source)
    return wanted, frozenset(unresolved)


# --- LDAP ------------------------------------------------------------------------------

def ldap_login(entry: DirectoryEntry, *, request: HttpRequest | None) -> User:
    """The Fleetroom user for a directory entry whose password was just accepted (or
    that the directory sync re-read): created or linked on first sight, attributes
    and group memberships brought up to date every time.  Raises :class:`SsoRefused`.
    """
    cfg = ldap_config()
    if cfg is None:
        raise SsoRefused("unknown_provider")
    now = timezone.now()
    wanted, unresolved = _ldap_wanted(cfg, entry.groups)
    try:
        try:
            user, identity = _ldap_identity(cfg, entry, wanted, now=now, request=request)
        except IntegrityError:
            # Two first logins of one person at once: the other created the identity.
            user, identity = _ldap_identity(cfg, entry, wanted, now=now, request=request)
    except SsoRefused as exc:
        audit_refusal(exc, provider=LDAP_PROVIDER, subject=entry.subject, request=request)
        raise
    _apply_memberships(identity, wanted, keep_sources=unresolved, revoke_others=True,
                       request=request)
    return user


def _ldap_identity(cfg: LdapConfig, entry: DirectoryEntry, wanted: Mapping[int, _Wanted], *,
                   now: datetime, request: HttpRequest | None) -> tuple[User, ExternalIdentity]:
    """Find, create or link the user and identity of ``entry``; update attributes."""
    with transaction.atomic():
        identity = (ExternalIdentity.objects.select_for_update().select_related("user")
                    .filter(provider=LDAP_PROVIDER, subject=entry.subject).first())
        if identity is None:
            user, linked = _ldap_first_login(cfg, entry, request=request)
            first_tenant = next(iter(wanted.values())).tenant if wanted else None
            identity = ExternalIdentity.objects.create(
                kind=ExternalIdentity.Kind.LDAP, provider=LDAP_PROVIDER,
                subject=entry.subject, user=user, tenant=first_tenant,
                last_seen_as=entry.dn[:1024], last_login_at=now)
            audit_events.record(
                audit_events.SSO_IDENTITY_LINKED if linked else audit_events.SSO_USER_CREATED,
                actor=None, target=user, request=request,
                data={"provider": LDAP_PROVIDER, "subject": entry.subject, "dn": entry.dn})
        else:
            user = identity.user
            _update_attributes(user, email=entry.email or None, first_name=entry.first_name,
                               last_name=entry.last_name, username=entry.username,
                               request=request, provider=LDAP_PROVIDER)
            identity.last_seen_as = entry.dn[:1024]
            identity.gone_at = None
            if request is not None:
                identity.last_login_at = now
            identity.save(update_fields=["last_seen_as", "gone_at", "last_login_at"])
    return user, identity


def _ldap_first_login(cfg: LdapConfig, entry: DirectoryEntry, *,
                      request: HttpRequest | None) -> tuple[User, bool]:
    """Create the user for a new directory identity, or link an existing account
    when configured; ``(user, linked)``.  Runs inside :func:`ldap_login`'s transaction."""
    def no(reason: str, detail: str = "", user: User | None = None) -> SsoRefused:
        return SsoRefused(reason, detail, user=user)

    if not entry.email:
        raise no("no_email", f"{entry.dn} has no {cfg.attributes.email}")
    by_email = User.objects.filter(email__iexact=entry.email).first()
    if by_email is not None:
        if cfg.link_existing_by_email and not by_email.external_identities.filter(
                provider=LDAP_PROVIDER).exists():
            _link_existing(by_email, provider=LDAP_PROVIDER, request=request)
            _update_attributes(by_email, email=None, first_name=entry.first_name,
                               last_name=entry.last_name, request=request,
                               provider=LDAP_PROVIDER)
            return by_email, True
        raise no("account_exists", f"e-mail address of {entry.dn} belongs to user "
                 f"{by_email.pk}", by_email)
    username = _clean_username(entry.username)
    if username is None:
        raise no("invalid_username", f"{entry.dn}: {entry.username!r}")
    taken = User.objects.filter(username__iexact=username).first()
    if taken is not None:
        raise no("account_exists", f"user name of {entry.dn} belongs to user {taken.pk}", taken)
    user = User(username=username, email=entry.email, first_name=entry.first_name[:150],
                last_name=entry.last_name[:150])
    user.set_unusable_password()
    user.save()
    return user, False


@dataclass
class SyncReport:
    """What :func:`sync_ldap_directory` did."""

    checked: int = 0
    updated: int = 0
    gone: list[int] = field(default_factory=list)
    """Ids of users whose directory entry is gone (newly, in this run)."""


def mark_identity_gone(identity: ExternalIdentity, *, now: datetime | None = None) -> bool:
    """The directory no longer has this entry: revoke the memberships it gave and end
    the user's sessions.  Returns False when it was already marked gone."""
    from fleetroom.accounts import services as account_services
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.tenancy import services as tenancy_services

    now = now or timezone.now()
    for em in ExternalMembership.objects.filter(identity=identity).select_related(
            "membership__tenant"):
        tenancy_services.do_revoke_membership(em.membership, acting_user=SYSTEM)
    if identity.gone_at is not None:
        return False
    with transaction.atomic():
        identity.gone_at = now
        identity.save(update_fields=["gone_at"])
        account_services.end_user_sessions(identity.user, reason="sso_identity_gone")
        audit_events.record(audit_events.SSO_IDENTITY_GONE, actor=None, target=identity.user,
                            data={"provider": identity.provider, "subject": identity.subject,
                                  "last_seen_as": identity.last_seen_as})
    return True


def sync_ldap_directory(*, now: datetime | None = None) -> SyncReport:
    """Re-read every directory identity: update attributes and group memberships of
    those still there, and :func:`mark_identity_gone` the ones that are not.

    Only an answer from the directory counts as "gone": a connection or search
    error stops the run (and raises) before anything is revoked.
    """
    from fleetroom.accounts.sso import ldap_backend

    report = SyncReport()
    cfg = ldap_config()
    if cfg is None:
        return report
    identities = list(ExternalIdentity.objects.filter(kind=ExternalIdentity.Kind.LDAP)
                      .select_related("user").order_by("pk"))
    with ldap_backend.LdapBackend().service_connection() as directory:
        for identity in identities:
            report.checked += 1
            found = directory.find_subject(identity.subject, cfg)
            if not found:
                if mark_identity_gone(identity, now=now):
                    report.gone.append(identity.user_id)
                continue
            if len(found) > 1:
                logger.error("LDAP sync: %d entries have %s %s; left user %s unchanged",
                             len(found), cfg.subject_attribute, identity.subject,
                             identity.user_id)
                continue
            dn, attrs = found[0]
            entry = ldap_backend.read_entry(directory.directory_user(dn, attrs, cfg), cfg)
            try:
                ldap_login(entry, request=None)
            except SsoRefused as exc:
                logger.warning("LDAP sync: %s not updated: %s", dn, exc.reason)
                continue
            report.updated += 1
    return report


# --- OpenID Connect --------------------------------------------------------------------

def oidc_claims(extra_data: Mapping[str, Any]) -> dict[str, Any]:
    """The claims allauth stored for an OIDC login: userinfo if fetched (it usually
    has more), else the ID token's."""
    for key in ("userinfo", "id_token"):
        value = extra_data.get(key)
        if isinstance(value, dict) and value:
            return dict(value)
    return dict(extra_data)


def email_verified(claims: Mapping[str, Any]) -> bool:
    """The provider's ``email_verified`` claim (some send the string "true")."""
    value = claims.get("email_verified")
    return value is True or (isinstance(value, str) and value.lower() == "true")


def oidc_user_created(user: User, *, provider: OidcProviderConfig, social_account: Any,
                      request: HttpRequest | None) -> ExternalIdentity:
    """Record the identity of a user allauth just created from an OIDC login, then
    grant the provider's membership (its own transaction, see the module docstring)."""
    tenant = resolve_tenant(provider.tenant)
    with transaction.atomic():
        identity = ExternalIdentity.objects.create(
            kind=ExternalIdentity.Kind.OIDC, provider=provider.id,
            subject=str(social_account.uid), user=user, tenant=tenant,
            social_account=social_account, last_seen_as=user.get_username(),
            last_login_at=timezone.now())
        audit_events.record(audit_events.SSO_USER_CREATED, actor=None, target=user,
                            request=request, data={"provider": provider.id,
                                                   "subject": identity.subject})
    if tenant is not None:
        _apply_memberships(identity, {tenant.pk: _Wanted(tenant, provider.default_role,
                                                         f"oidc:{provider.id}")},
                           revoke_others=False, request=request)
    return identity


def oidc_linked(user: User, *, provider: OidcProviderConfig, social_account: Any,
                request: HttpRequest | None) -> ExternalIdentity:
    """An existing account was linked to an OIDC login by its verified address:
    record the identity, drop the local password.  No membership is added — the
    account already has what an administrator gave it."""
    with transaction.atomic():
        _link_existing(user, provider=provider.id, request=request)
        identity = ExternalIdentity.objects.create(
            kind=ExternalIdentity.Kind.OIDC, provider=provider.id,
            subject=str(social_account.uid), user=user, tenant=None,
            social_account=social_account, last_seen_as=user.get_username(),
            last_login_at=timezone.now())
        audit_events.record(audit_events.SSO_IDENTITY_LINKED, actor=None, target=user,
                            request=request, data={"provider": provider.id,
                                                   "subject": identity.subject})
    return identity


def oidc_returning_login(user: User, *, provider: OidcProviderConfig, social_account: Any,
                         claims: Mapping[str, Any], request: HttpRequest | None) -> None:
    """A known OIDC identity logs in again: refresh name and (verified, allowed)
    address, and note the login."""
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    if email and ((provider.require_email_verified and not email_verified(claims))
                  or not email_domain_allowed(email, provider.allowed_email_domains)):
        email = None
    with transaction.atomic():
        _update_attributes(user, email=email, first_name=_str_claim(claims, "given_name"),
                           last_name=_str_claim(claims, "family_name"), request=request,
                           provider=provider.id)
        identity = ExternalIdentity.objects.filter(social_account=social_account).first()
        if identity is None:  # an account connected before SSO was configured
            identity = ExternalIdentity.objects.create(
                kind=ExternalIdentity.Kind.OIDC, provider=provider.id,
                subject=str(social_account.uid), user=user, social_account=social_account)
        identity.last_login_at = timezone.now()
        identity.last_seen_as = user.get_username()
        identity.save(update_fields=["last_login_at", "last_seen_as"])


def _str_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None

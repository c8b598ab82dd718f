"""Users and the account-security records that belong to them.

A custom user model from the first migration, as Django advises, so accounts can
grow (deactivation, SSO subjects) without a painful swap later.  Lockouts are
kept in our own table beside django-axes' attempt rows because axes forgets an
attempt once its cool-off is over, while the growing cool-off and the admin's
"unlock" need to remember how often an account was locked recently.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A person who logs in; what they may see comes from tenancy memberships."""

    email = models.EmailField(_("email address"), unique=True)
    deactivated_at = models.DateTimeField(_("deactivated at"), null=True, blank=True)
    deactivation_reason = models.CharField(_("deactivation reason"), max_length=200, blank=True)
    reactivated_at = models.DateTimeField(_("reactivated at"), null=True, blank=True)
    """When an administrator last re-enabled the account.  Idle time counts from the
    latest of this, the last login and the date joined — otherwise the nightly job
    would deactivate a reactivated user again before they had a chance to log in."""

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")


class LockoutEvent(models.Model):
    """One lockout of a login name after too many failed attempts.

    ``username`` is the canonical login name axes counts under (the account's
    username when it exists, otherwise what was typed), so unknown names are
    locked exactly like real ones and the lockout reveals nothing.  ``lifted_at``
    is set by an administrator's unlock or a password reset; lifted events no
    longer make the next cool-off longer.
    """

    username = models.CharField(_("login name"), max_length=255, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True,
                             blank=True, on_delete=models.SET_NULL, related_name="lockouts")
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    locked_at = models.DateTimeField(_("locked at"))
    locked_until = models.DateTimeField(_("locked until"))
    number = models.PositiveIntegerField(_("lockouts in a row"), default=1)
    """How many un-lifted lockouts this name had within the memory window, this one
    included; the cool-off doubles with each."""
    lifted_at = models.DateTimeField(_("lifted at"), null=True, blank=True)
    lifted_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("lifted by"),
                                  null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")

    class Meta:
        verbose_name = _("lockout")
        verbose_name_plural = _("lockouts")
        ordering = ("-locked_at",)
        indexes = [models.Index(fields=["username", "locked_at"], name="lockout_user_time")]

    def __str__(self) -> str:
        return f"{self.username} @ {self.locked_at:%Y-%m-%d %H:%M}"


# --- SSO: external identities (fleetroom/accounts/sso) ------------------------------------

class ExternalIdentity(models.Model):
    """A person as a directory or an OpenID Connect provider knows them: ``(provider,
    subject)`` → one Fleetroom user.

    ``subject`` is what never changes for that person there: the LDAP entry's
    ``entryUUID`` (Active Directory: ``objectGUID``) — not the DN, which changes on a
    rename or move — or the OIDC ``sub`` claim.  For OIDC, allauth's
    ``SocialAccount`` (provider id, uid) is the record allauth logs in by; this row
    points at it and adds what allauth does not know: the tenant the person came in
    through.  Written only by :mod:`fleetroom.accounts.sso.services`.
    """

    class Kind(models.TextChoices):
        LDAP = "ldap", _("Directory (LDAP)")
        OIDC = "oidc", _("OpenID Connect")

    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    provider = models.CharField(_("provider"), max_length=64)
    """``ldap``, or the OIDC provider's configured id (allauth's ``SocialAccount.provider``)."""
    subject = models.CharField(_("subject"), max_length=255)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"),
                             on_delete=models.CASCADE, related_name="external_identities")
    tenant = models.ForeignKey("tenancy.Tenant", verbose_name=_("came in through"), null=True,
                               blank=True, on_delete=models.SET_NULL, related_name="+")
    social_account = models.OneToOneField("socialaccount.SocialAccount",
                                          verbose_name=_("social account"), null=True,
                                          blank=True, on_delete=models.CASCADE,
                                          related_name="fleetroom_identity")
    last_seen_as = models.CharField(_("last seen as"), max_length=1024, blank=True)
    """The entry's DN or the provider's user name at the last login (for administrators)."""
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_login_at = models.DateTimeField(_("last login"), null=True, blank=True)
    gone_at = models.DateTimeField(_("gone from the directory"), null=True, blank=True)
    """Set when the directory sync no longer finds the entry; cleared when it returns."""

    class Meta:
        verbose_name = _("external identity")
        verbose_name_plural = _("external identities")
        constraints = [
            models.UniqueConstraint(fields=["provider", "subject"],
                                    name="external_identity_unique_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.subject}"


class ExternalMembership(models.Model):
    """A membership that exists because of an external identity: a directory group
    mapped in ``[[sso.ldap.groups]]``, or an OIDC provider's ``tenant``.

    Only these are changed or revoked by the directory sync; memberships granted
    by hand are never touched.  Revoking the membership deletes this row.
    """

    identity = models.ForeignKey(ExternalIdentity, verbose_name=_("external identity"),
                                 on_delete=models.CASCADE, related_name="memberships")
    membership = models.OneToOneField("tenancy.Membership", verbose_name=_("membership"),
                                      on_delete=models.CASCADE, related_name="external_source")
    source = models.CharField(_("source"), max_length=1024)
    """The group DN (normalised), or ``oidc:<provider id>``."""

    class Meta:
        verbose_name = _("external membership")
        verbose_name_plural = _("external memberships")

    def __str__(self) -> str:
        return f"{self.identity} → {self.membership_id}"

"""Per-user API tokens.

A token is a second way of being the same person: it carries no permissions of
its own, so whatever the user may see (their memberships, read through the tenant
scope on every request) the token may see, and nothing else.  Revoking a
membership or deactivating the user therefore takes effect for tokens at once.

Only a hash of the secret is stored (see :mod:`fleetroom.api.tokens`); the token
itself is shown once, when it is created.  Tokens are a person's own account
data, not tenant data, so this model has no ``tenant_field``: it is only ever read
by its owner's id (or by its key id when a request presents it).
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class TokenSource(models.TextChoices):
    """Where a token was created (shown in the list so the owner recognises it)."""

    API = "api", _("API (login with password)")
    WEB = "web", _("Web page")


class RevokeReason(models.TextChoices):
    """Why a token stopped working; stored so the owner and the audit log can tell."""

    OWNER = "owner", _("Revoked by its owner")
    DEACTIVATED = "deactivated", _("Account deactivated")
    PASSWORD_CHANGED = "password_changed", _("Password changed")
    PASSWORD_RESET = "password_reset", _("Password reset")


class TokenState(models.TextChoices):
    """What a token is now (derived, never stored)."""

    ACTIVE = "active", _("Active")
    EXPIRED = "expired", _("Expired")
    REVOKED = "revoked", _("Revoked")


class ApiToken(models.Model):
    """One API token of one user.  Create and revoke only through :mod:`.services`."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"),
                             on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100)
    key_id = models.CharField(_("key id"), max_length=16, unique=True, editable=False)
    """The non-secret middle part of the token (see :mod:`.tokens`)."""
    secret_hash = models.CharField(_("secret hash"), max_length=64, editable=False)
    password_fingerprint = models.CharField(_("password fingerprint"), max_length=64,
                                            editable=False)
    """Keyed hash of the user's password hash at creation.  A token whose user's
    password has changed since is refused (and revoked) even if the change came
    through a path that sends no signal, e.g. ``manage changepassword`` — the same
    rule Django applies to sessions."""
    created_via = models.CharField(_("created via"), max_length=8, choices=TokenSource.choices)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires at"))
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(_("last used from"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    """Set once, never cleared: a revoked token stays revoked (the revoked flag)."""
    revoked_reason = models.CharField(_("revoked because"), max_length=32, blank=True,
                                      choices=RevokeReason.choices)

    objects: ClassVar[models.Manager[ApiToken]] = models.Manager()

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ("-created_at", "-pk")
        indexes = [
            # "this user's live tokens": the list page, the per-user limit and the
            # revoke-all on deactivation or password change.
            models.Index(fields=["user", "revoked_at"], name="api_token_user_live"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id})"

    @property
    def is_revoked(self) -> bool:
        """True once the token has been revoked, for whatever reason."""
        return self.revoked_at is not None

    def state(self) -> TokenState:
        """Active, expired or revoked, as of now."""
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.expires_at <= timezone.now():
            return TokenState.EXPIRED
        return TokenState.ACTIVE

    def masked(self) -> str:
        """How the token is shown after creation: its key id, never the secret."""
        from .tokens import PREFIX

        return f"{PREFIX}_{self.key_id}_…"

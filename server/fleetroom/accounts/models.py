"""Users.  A custom user model from the first migration, as Django advises, so
accounts can grow (deactivation, SSO subjects) without a painful swap later."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """A person who logs in; what they may see comes from tenancy memberships."""

    email = models.EmailField(_("email address"), unique=True)
    deactivated_at = models.DateTimeField(_("deactivated at"), null=True, blank=True)
    deactivation_reason = models.CharField(_("deactivation reason"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

"""The form of the token web page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import conf, services

LIFETIME_CHOICES_DAYS = (7, 30, 90, 180, 365)
"""Offered lifetimes; only those up to the configured maximum are shown."""


def _lifetime_choices() -> list[tuple[int, str]]:
    days = [d for d in LIFETIME_CHOICES_DAYS if d <= conf.token_max_days()]
    for extra in (conf.token_default_days(), conf.token_max_days()):
        if extra not in days:
            days.append(extra)
    return [(d, ngettext("%(days)d day", "%(days)d days", d) % {"days": d})
            for d in sorted(days)]


class TokenCreateForm(forms.Form):
    """Name and lifetime of a new token."""

    name = forms.CharField(label=_("Name"), max_length=services.NAME_MAX,
                           help_text=_("What the token is for, e.g. “monthly meter export”."))
    days = forms.TypedChoiceField(label=_("Valid for"), coerce=int)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["days"].choices = _lifetime_choices()  # type: ignore[attr-defined]
        self.fields["days"].initial = conf.token_default_days()

    def clean_name(self) -> str:
        """The service's rule for names, as a form error instead of an exception."""
        try:
            return services.clean_name(self.cleaned_data.get("name"))
        except services.TokenRequestInvalid as exc:
            raise forms.ValidationError(exc.message) from None

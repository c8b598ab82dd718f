"""The few account views of our own; everything else is allauth's."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse


def email_managed_by_admin(request: HttpRequest) -> HttpResponse:
    """Shadows allauth's e-mail management page.

    Users do not add or change their own addresses: an address added without
    verification would at once be usable for login and password reset, so a
    stolen session could be turned into a permanent takeover.  Administrators
    maintain ``User.email``; a verified self-service change can come later.
    """
    raise Http404

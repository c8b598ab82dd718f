"""Account URLs: allauth's login, logout, password, MFA and session pages.

Mounted at ``accounts/`` (inside the language prefix).  Signup stays routed so
allauth can answer it with "closed"; e-mail management is shadowed (see
:func:`.views.email_managed_by_admin`).
"""

from __future__ import annotations

from django.urls import include, path

from fleetroom.accounts import views

urlpatterns = [
    path("email/", views.email_managed_by_admin, name="fleetroom_account_email"),
    path("", include("allauth.urls")),
]

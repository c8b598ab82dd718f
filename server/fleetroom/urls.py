"""URL configuration: every route is listed in the permissions matrix tests."""

from __future__ import annotations

from django.conf.urls.i18n import i18n_patterns
from django.urls import include, path

from fleetroom.core import views as core_views

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/", include("fleetroom.api.urls")),
    path("", include("fleetroom.agents.urls_protocol")),
]
urlpatterns += i18n_patterns(
    path("", core_views.home, name="home"),
    path("accounts/", include("fleetroom.accounts.urls")),
    path("fleet/", include("fleetroom.fleet.urls")),
    path("admin/", include("fleetroom.tenancy.urls")),
    path("agents/", include("fleetroom.agents.urls")),
    prefix_default_language=False,
)

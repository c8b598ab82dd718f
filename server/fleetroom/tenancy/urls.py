"""Administration pages: sites, users and memberships, access codes (mounted at ``admin/``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

app_name = "tenancy"

urlpatterns: list[URLPattern | URLResolver] = []

"""Fleet pages: dashboard, device list and export, device detail (mounted at ``fleet/``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

app_name = "fleet"

urlpatterns: list[URLPattern | URLResolver] = []

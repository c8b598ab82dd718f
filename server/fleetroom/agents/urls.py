"""Pages for people: agents, enrollment tokens, commands."""

from __future__ import annotations

from django.urls import URLPattern

app_name = "agents"

urlpatterns: list[URLPattern] = []

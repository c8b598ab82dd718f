"""Routes the agents call (outbound from the customer network; no session, no CSRF).

Mounted outside the language prefix: an agent is not a browser.
"""

from __future__ import annotations

from django.urls import URLPattern

app_name = "agent_protocol"

urlpatterns: list[URLPattern] = []

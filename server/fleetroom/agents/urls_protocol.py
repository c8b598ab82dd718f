"""Routes the agents call (outbound from the customer network; no session, no CSRF).

Mounted outside the language prefix: an agent is not a browser.
"""

from __future__ import annotations

from django.urls import URLPattern, path
from fleetroom_protocol.messages import PATH_ENROLL, PATH_MESSAGES, PATH_PROFILES

from . import bundle_views, views_protocol

app_name = "agent_protocol"

urlpatterns: list[URLPattern] = [
    path(PATH_ENROLL.lstrip("/"), views_protocol.enroll_view, name="enroll"),
    path(PATH_MESSAGES.lstrip("/"), views_protocol.messages_view, name="messages"),
    path(PATH_PROFILES.lstrip("/"), bundle_views.profiles_latest, name="profiles_latest"),
]

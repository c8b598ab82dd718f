"""Mounts the API at ``/api/`` (outside the language prefix) and the token web page.

* ``/api/v1/…`` — the API itself (:mod:`.main`), ``/api/docs`` and
  ``/api/openapi.json`` beside it;
* ``/api/account/tokens/`` — the web page where a logged-in person creates, lists
  and revokes their tokens (a normal Django view with the site's layout);
* anything else below ``/api/`` answers a JSON 404, so API clients never have to
  parse an HTML error page.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path, re_path

from . import views
from .main import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.api_root, name="api_index"),
    path("account/tokens/", views.token_list, name="api_token_list"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="api_token_revoke"),
    path("", api.urls),
    re_path(r"^", views.not_found, name="api_not_found"),
]

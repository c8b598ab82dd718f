"""The test provider's own code: claims, and the test-only user endpoint.

Imported by Django (URLconf, DOT's validator setting) after ``serve`` configured it.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.oauth2_validators import OAuth2Validator

PROFILES: dict[str, dict[str, Any]] = {}
"""Claims per username (set through /_test/users)."""


class ClaimsValidator(OAuth2Validator):  # type: ignore[misc]
    """Standard claims from the profile set through /_test/users (DOT filters them by
    the granted scopes: names with ``profile``, address with ``email``)."""

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        profile = PROFILES.get(request.user.get_username(), {})
        claims = {
            "preferred_username": request.user.get_username(),
            "name": " ".join(p for p in (profile.get("given_name"),
                                         profile.get("family_name")) if p),
            "given_name": profile.get("given_name", ""),
            "family_name": profile.get("family_name", ""),
            "email": profile.get("email", ""),
        }
        if profile.get("email_verified") is not None:
            claims["email_verified"] = profile["email_verified"]
        return claims


@csrf_exempt
def test_users(request: HttpRequest) -> HttpResponse:
    """POST JSON ``{username, password, email, email_verified, given_name, family_name}``:
    create or update that user (test-only; the server listens on loopback only)."""
    if request.method != "POST":
        return HttpResponse(status=405)
    data = json.loads(request.body)
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=data["username"])
    if data.get("password"):
        user.set_password(data["password"])
    user.save()
    PROFILES[user.get_username()] = {k: data.get(k) for k in (
        "email", "email_verified", "given_name", "family_name")}
    return JsonResponse({"ok": True})

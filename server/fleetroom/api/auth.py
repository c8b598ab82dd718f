"""Bearer-token authentication for the API.

A request with ``Authorization: Bearer frt_…`` runs as the token's user: the
request's ``user`` is replaced by that user, so every read below goes through the
tenant scope exactly as the user's own web requests do.  The session cookie, if
a browser sends one, is ignored: the API never acts on ambient credentials, which
is also why it needs no CSRF protection.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from . import services
from .errors import TokenAuthFailed
from .models import ApiToken


class BearerToken(HttpBearer):
    """``Authorization: Bearer <token>``; operations see the token as ``request.auth``."""

    # OpenAPI names the fields of a security scheme in camelCase.
    openapi_bearerFormat = "frt_<key id>_<secret>"
    openapi_description = ("An API token from POST /api/v1/tokens or the API tokens page "
                           "of the web interface.")

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken:
        """Check the token (see :func:`fleetroom.api.services.authenticate`) or raise 401."""
        try:
            api_token = services.authenticate(token, request=request)
        except services.TokenRejected as exc:
            raise TokenAuthFailed(exc.code) from None
        request.user = api_token.user
        return api_token


bearer = BearerToken()

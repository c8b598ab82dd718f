"""One JSON error shape for every failure the API can answer with.

Every error body is ``{"detail": <a sentence for people>, "code": <a stable word
for programs>}``, plus ``errors`` (where and why) for 422.  ``detail`` is
translated into the request's language; ``code`` never is, so scripts can branch
on it.  The handlers replace ninja's defaults, which answer 422 with a bare list
and a server error with a traceback page (in debug) or Django's HTML page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from .services import TokenLimitReached, TokenRequestInvalid

logger = logging.getLogger(__name__)

AUTH_CHALLENGE = 'Bearer realm="fleetroom"'
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
"""What ninja answers with; the answers outside ninja (root, unknown paths) match it."""


class TokenAuthFailed(AuthenticationError):
    """A token was presented but does not authenticate; ``code`` says why (401)."""

    def __init__(self, code: str) -> None:
        super().__init__(status_code=401, message=code)
        self.code = code


class TokenIssueRefused(HttpError):
    """Credentials for a new token were refused (401); ``code`` from accounts."""

    def __init__(self, code: str) -> None:
        super().__init__(status_code=401, message=code)
        self.code = code


def _token_messages() -> dict[str, str]:
    return {
        "not_authenticated": _("Authentication required: send an API token as "
                               "'Authorization: Bearer <token>'."),
        "invalid": _("The API token is not valid."),
        "expired": _("The API token has expired. Create a new one."),
        "revoked": _("The API token has been revoked. Create a new one."),
        "inactive": _("The account this API token belongs to is deactivated."),
        "mfa_setup_required": _("Your account requires two-factor authentication. Set it up "
                                "in the web interface first."),
    }


def _issue_messages() -> dict[str, str]:
    return {
        "invalid_credentials": _("The login, password or code is not correct."),
        "mfa_code_required": _("This account uses two-factor authentication: send the "
                               "current code from your authenticator app (or a recovery "
                               "code) in 'code'."),
        "mfa_setup_required": _("Your account requires two-factor authentication. Set it up "
                                "in the web interface first."),
        "mfa_method_unsupported": _("Your account only has security keys, which cannot be "
                                    "used here. Create the token on the API tokens page of "
                                    "the web interface."),
    }


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    """The one error shape."""
    return {"detail": detail, "code": code, **extra}


def error_response(status: int, detail: str, code: str, **extra: Any) -> HttpResponse:
    """An error as a JSON response (also for Django-level answers outside ninja)."""
    response = JsonResponse(error_body(detail, code, **extra), status=status,
                            content_type=JSON_CONTENT_TYPE)
    if status == 401:
        response["WWW-Authenticate"] = AUTH_CHALLENGE
    return response


def _validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
                    "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


def install(api: NinjaAPI) -> None:
    """Replace ninja's default exception handlers on ``api`` with ours."""

    def respond(request: HttpRequest, status: int, detail: str, code: str,
                **extra: Any) -> HttpResponse:
        response: HttpResponse = api.create_response(request, error_body(detail, code, **extra),
                                                     status=status)
        if status == 401:
            response["WWW-Authenticate"] = AUTH_CHALLENGE
        return response

    def on_validation(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        return respond(request, 422, _("The request is not valid; see 'errors' for where "
                                       "and why."), "validation_error",
                       errors=_validation_errors(exc.errors))

    def on_token_auth(request: HttpRequest, exc: TokenAuthFailed) -> HttpResponse:
        messages = _token_messages()
        return respond(request, 401, messages.get(exc.code, messages["invalid"]),
                       f"token_{exc.code}" if exc.code != "invalid" else "invalid_token")

    def on_auth(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        return respond(request, 401, _token_messages()["not_authenticated"],
                       "not_authenticated")

    def on_issue_refused(request: HttpRequest, exc: TokenIssueRefused) -> HttpResponse:
        messages = _issue_messages()
        return respond(request, 401, messages.get(exc.code, messages["invalid_credentials"]),
                       exc.code)

    def on_throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
        return respond(request, 429, _("Too many requests. Wait a moment and try again "
                                       "(see Retry-After)."), "throttled")

    def on_limit(request: HttpRequest, exc: TokenLimitReached) -> HttpResponse:
        return respond(request, 409, str(exc.message), "token_limit_reached")

    def on_token_request(request: HttpRequest, exc: TokenRequestInvalid) -> HttpResponse:
        return respond(request, 422, str(exc.message), "validation_error", errors=[])

    def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400:
            return respond(request, 400, _("The request body is not valid JSON."),
                           "bad_request")
        return respond(request, exc.status_code, str(exc), "error")

    def on_404(request: HttpRequest, exc: Http404) -> HttpResponse:
        return respond(request, 404, _("Not found."), "not_found")

    def on_403(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
        # Only reached for actions on one's own objects (a token of someone else is
        # already a 404), so the refusal reveals nothing.
        return respond(request, 403, str(exc) or _("You do not have permission to do this."),
                       "permission_denied")

    def on_exception(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("API error on %s %s", request.method, request.path)
        return respond(request, 500, _("Internal server error. The error has been logged."),
                       "server_error")

    def add(exc_class: type[Exception],
            handler: Callable[[HttpRequest, Any], HttpResponse]) -> None:
        api.add_exception_handler(exc_class, handler)

    add(ValidationError, on_validation)
    add(TokenAuthFailed, on_token_auth)
    add(AuthenticationError, on_auth)
    add(TokenIssueRefused, on_issue_refused)
    add(Throttled, on_throttled)
    add(TokenLimitReached, on_limit)
    add(TokenRequestInvalid, on_token_request)
    add(HttpError, on_http_error)
    add(Http404, on_404)
    add(PermissionDenied, on_403)
    add(Exception, on_exception)

"""The HTTPS edge of the agent protocol: bytes in, bytes out, nothing decided here.

Both views are CSRF-exempt and session-free (an agent is not a browser; it proves
itself by its token or its signature).  The request size is capped *before* the
body is read: by ``Content-Length`` (a missing length is refused, so a chunked
upload cannot stream past the cap) and by a bounded read.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from fleetroom_protocol.messages import CONTENT_TYPE, EnrollRequest
from pydantic import ValidationError

from fleetroom.core.audit import client_ip

from .conf import config
from .receive import receive_envelope
from .services import EnrollmentRefused, enroll

MAX_ENROLL_BYTES = 16 * 1024


def _length(request: HttpRequest) -> int | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def _read(request: HttpRequest, cap: int) -> bytes | HttpResponse:
    """The body, or the response refusing it (411 without a length, 413 over ``cap``)."""
    length = _length(request)
    if length is None:
        return _error(411, "length_required", _("Send a Content-Length header."))
    if length > cap:
        return _error(413, "too_large", _("The request is too large."))
    data = request.read(cap + 1)
    if len(data) > cap:
        return _error(413, "too_large", _("The request is too large."))
    return data


def read_envelope(request: HttpRequest, cap: int) -> bytes | HttpResponse:
    """A sealed envelope's bytes, or the response refusing it (415, 411, 413)."""
    if request.content_type != CONTENT_TYPE:
        return _error(415, "unsupported_media_type",
                      _("Send a Fleetroom envelope (%(type)s).") % {"type": CONTENT_TYPE})
    return _read(request, cap)


def _error(status: int, code: str, message: str, retry_after: float | None = None,
           ) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(math.ceil(retry_after))
    return response


@csrf_exempt
@require_POST
def enroll_view(request: HttpRequest) -> HttpResponse:
    """``POST /agent/v1/enroll``: JSON ``EnrollRequest`` → JSON ``EnrollResponse``."""
    if request.content_type != "application/json":
        return _error(415, "unsupported_media_type", _("Send JSON (application/json)."))
    data = _read(request, MAX_ENROLL_BYTES)
    if isinstance(data, HttpResponse):
        return data
    try:
        req = EnrollRequest.model_validate_json(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        return _error(400, "invalid_request",
                      _("The enrollment request is not valid (%(fields)s).")
                      % {"fields": ", ".join(fields[:10])})
    try:
        response = enroll(req, client_ip(request))
    except EnrollmentRefused as exc:
        return _error(exc.status, exc.code, str(exc.message), exc.retry_after)
    body: dict[str, Any] = json.loads(response.model_dump_json())
    return JsonResponse(body, status=201)


@csrf_exempt
@require_POST
def messages_view(request: HttpRequest) -> HttpResponse:
    """``POST /agent/v1/messages``: one signed envelope in, the signed reply out."""
    data = read_envelope(request, config().max_envelope_bytes)
    if isinstance(data, HttpResponse):
        return data
    outcome = receive_envelope(data, transport="https", source=client_ip(request) or "-")
    response = HttpResponse(outcome.body, status=outcome.status, content_type=CONTENT_TYPE)
    if outcome.retry_after is not None:
        response["Retry-After"] = str(math.ceil(outcome.retry_after))
    return response

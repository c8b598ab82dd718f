"""``POST /agent/v1/profiles/latest``: the newest profile bundle, for enrolled agents only.

The request is a sealed ``poll`` envelope (:mod:`fleetroom_protocol.envelope`) —
the same authentication as every other agent message: the agent's signature,
its message counter (replay window), its status.  The agent says which bundle
it holds in the signed body (``state.profiles_version``), so nothing about the
request can be altered on the way.  POST rather than GET with the envelope in a
header: header size limits of proxies, and no intermediary may cache it.

Answers:

* ``204`` — nothing newer than what the agent holds (or nothing published yet);
* ``200`` — a sealed ``reply`` envelope addressed to the agent, answering this
  request (``reply_to`` = its counter), whose body is the bundle file byte for
  byte (``enc: identity``; it is a zip already).  The envelope's signed ``ts`` is
  the server's clock, which the agent uses to judge the bundle's expiry — so a
  wrong agent clock neither accepts an expired bundle nor refuses a fresh one;
* ``401`` (unknown agent, bad signature; empty body), ``400`` (malformed), ``405``,
  ``411``/``413``/``415`` (the messages view's edge rules), ``429`` (with
  Retry-After), ``403`` (suspended, revoked, replayed counter — each a policy
  violation counted exactly as for messages; a signed reply says why).

Unlike a ``poll`` to ``/agent/v1/messages`` this takes no commands for delivery
and stores no state beyond the replay window: fetching profiles must not make
a command look delivered to an agent that never sees it.
"""

from __future__ import annotations

import logging
from typing import Final

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from fleetroom_protocol.envelope import (
    SERVER,
    EnvelopeError,
    Sealed,
    body_model,
    seal,
    split,
    verify,
)
from fleetroom_protocol.messages import CONTENT_TYPE, PollBody, Reply
from fleetroom_protocol.replay import ReplayState

from fleetroom.core.audit import client_ip

from . import ratelimit
from .bundles import latest_bundle
from .conf import config
from .keys import server_keys
from .models import Agent, AgentStatus, Violation
from .receive import seal_for, server_ctr
from .services import do_record_violation

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES: Final = 64 * 1024
"""A poll envelope is well under a kilobyte."""
TRANSPORT: Final = "https"


def _empty(status: int, retry_after: float | None = None) -> HttpResponse:
    response = HttpResponse(b"", status=status)
    if retry_after is not None:
        response["Retry-After"] = str(int(retry_after))
    response["Cache-Control"] = "no-store"
    return response


def _sealed(status: int, body: bytes, retry_after: float | None = None) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type=CONTENT_TYPE)
    if retry_after is not None:
        response["Retry-After"] = str(int(retry_after))
    response["Cache-Control"] = "no-store"
    return response


def _refusal(agent: Agent, sealed: Sealed, status: int, message: str,
             retry_after: float | None = None) -> HttpResponse:
    state = {AgentStatus.SUSPENDED: "suspended", AgentStatus.REVOKED: "revoked"}.get(
        AgentStatus(agent.status), "ok")
    reply = Reply.model_validate({"status": state, "message": message})
    return _sealed(status, seal_for(agent.public_id, reply, reply_to=sealed.header.ctr),
                   retry_after)


def _violation(agent: Agent, sealed: Sealed, violation: Violation, source: str) -> HttpResponse:
    updated = do_record_violation(agent, violation, ctr=sealed.header.ctr, transport=TRANSPORT,
                                  source=source)
    return _refusal(updated, sealed, 403, str(Violation(violation).label))


def _authenticate(data: bytes, source: str) -> tuple[Agent, Sealed, PollBody] | HttpResponse:
    """The agent and its poll, or the response refusing it (same rules as receive.py)."""
    cfg = config()
    wait = ratelimit.blocked("source", source, cfg.source_failure_rate)
    if wait is not None:
        return _empty(429, wait)
    try:
        sealed = split(data, max_bytes=MAX_REQUEST_BYTES)
    except EnvelopeError as exc:
        if exc.code == "too-large":
            return _empty(413)
        ratelimit.hit("source", source, cfg.source_failure_rate)
        return _empty(400)
    header = sealed.header
    agent = Agent.objects.select_related("tenant").filter(public_id=header.sender).first()
    if agent is None:
        ratelimit.hit("source", source, cfg.source_failure_rate)
        return _empty(401)
    try:
        verify(sealed, agent.verify_key)
    except EnvelopeError:
        ratelimit.hit("source", source, cfg.source_failure_rate)
        return _empty(401)
    # Validly signed from here on: refusals are signed replies, breaches are violations.
    if agent.status == AgentStatus.REVOKED:
        return _violation(agent, sealed, Violation.REVOKED, source)
    if agent.status == AgentStatus.SUSPENDED:
        return _violation(agent, sealed, Violation.SUSPENDED, source)
    if header.to != SERVER:
        return _violation(agent, sealed, Violation.WRONG_RECIPIENT, source)
    if header.kind != "poll":
        return _refusal(agent, sealed, 400, gettext("Ask for profiles with a poll."))
    if not agent.tenant.active_in_tree:
        return _refusal(agent, sealed, 403,
                        gettext("The customer or site of this agent is deactivated."))
    wait = ratelimit.hit("agent", agent.public_id, cfg.agent_rate)
    if wait is not None:
        return _refusal(agent, sealed, 429, gettext("Too many requests; try again later."), wait)
    try:
        body = body_model(sealed, PollBody, max_bytes=MAX_REQUEST_BYTES)
    except EnvelopeError as exc:
        return _refusal(agent, sealed, 413 if exc.code == "too-large" else 400, str(exc))
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        verdict, replay = ReplayState.from_text(locked.replay_state).check(header.ctr)
        if verdict == "new":
            locked.replay_state = replay.to_text()
            locked.save(update_fields=["replay_state"])
    if verdict != "new":
        return _violation(agent, sealed,
                          Violation.TOO_OLD if verdict == "too-old" else Violation.REPLAYED,
                          source)
    return agent, sealed, body


def _read(request: HttpRequest) -> bytes | HttpResponse:
    """The body, capped before it is read (the same edge rules as the messages view)."""
    if request.content_type != CONTENT_TYPE:
        return _error(415, "unsupported_media_type",
                      gettext("Send a Fleetroom envelope (%(type)s).") % {"type": CONTENT_TYPE})
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        length = -1
    if length < 0:
        return _error(411, "length_required", gettext("Send a Content-Length header."))
    if length > MAX_REQUEST_BYTES:
        return _error(413, "too_large", gettext("The request is too large."))
    data = request.read(MAX_REQUEST_BYTES + 1)
    if len(data) > MAX_REQUEST_BYTES:
        return _error(413, "too_large", gettext("The request is too large."))
    return data


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


@csrf_exempt
@require_POST
def profiles_latest(request: HttpRequest) -> HttpResponse:
    """Serve the newest bundle to an authenticated agent that does not have it yet."""
    data = _read(request)
    if isinstance(data, HttpResponse):
        return data
    result = _authenticate(data, client_ip(request) or "-")
    if isinstance(result, HttpResponse):
        return result
    agent, sealed, body = result
    held = body.state.profiles_version or 0
    latest = latest_bundle()
    if latest is None or latest.version <= held:
        return _empty(204)
    try:
        bundle = latest.read()
    except OSError:
        log.exception("cannot read profile bundle %s", latest.path)
        return _empty(503, 300)
    reply = seal(bundle, signing_key=server_keys().signing_key, sender=SERVER,
                 to=agent.public_id, ctr=server_ctr(), kind="reply",
                 reply_to=sealed.header.ctr, compress=False)
    log.info("profile bundle %s sent to agent %s (it had %s)", latest.version,
             agent.public_id, held)
    return _sealed(200, reply)

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
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from fleetroom_protocol.envelope import SERVER, EnvelopeError, Sealed, body_model, seal
from fleetroom_protocol.messages import CONTENT_TYPE, PollBody
from fleetroom_protocol.replay import ReplayState

from fleetroom.core.audit import client_ip

from . import ratelimit
from .bundles import latest_bundle
from .conf import config
from .keys import server_keys
from .models import Agent
from .receive import (
    Outcome,
    authenticate,
    replay_violation,
    server_ctr,
    signed_outcome,
    violation_outcome,
)
from .views_protocol import read_envelope

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


def _response(outcome: Outcome) -> HttpResponse:
    if outcome.body:
        return _sealed(outcome.status, outcome.body, outcome.retry_after)
    return _empty(outcome.status, outcome.retry_after)


def _authenticate(data: bytes, source: str) -> tuple[Agent, Sealed, PollBody] | HttpResponse:
    """The agent and its poll, or the response refusing it (same rules as receive.py)."""
    result = authenticate(data, transport=TRANSPORT, source=source,
                          max_bytes=MAX_REQUEST_BYTES)
    if isinstance(result, Outcome):
        return _response(result)
    # Validly signed from here on: refusals are signed replies, breaches are violations.
    agent, sealed = result
    header = sealed.header
    if header.kind != "poll":
        return _response(signed_outcome(agent, header, 400, "wrong-kind",
                                        message=gettext("Ask for profiles with a poll.")))
    if not agent.tenant.active_in_tree:
        return _response(signed_outcome(
            agent, header, 403, "tenant-inactive",
            message=gettext("The customer or site of this agent is deactivated.")))
    wait = ratelimit.hit("agent", agent.public_id, config().agent_rate)
    if wait is not None:
        return _response(signed_outcome(
            agent, header, 429, "agent-limited", retry_after=wait,
            message=gettext("Too many requests; try again later.")))
    try:
        body = body_model(sealed, PollBody, max_bytes=MAX_REQUEST_BYTES)
    except EnvelopeError as exc:
        return _response(signed_outcome(agent, header, 413 if exc.code == "too-large" else 400,
                                        exc.code, message=str(exc)))
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        verdict, replay = ReplayState.from_text(locked.replay_state).check(header.ctr)
        if verdict == "new":
            locked.replay_state = replay.to_text()
            locked.save(update_fields=["replay_state"])
    if verdict != "new":
        return _response(violation_outcome(agent, header, replay_violation(verdict),
                                           TRANSPORT, source))
    return agent, sealed, body


@csrf_exempt
@require_POST
def profiles_latest(request: HttpRequest) -> HttpResponse:
    """Serve the newest bundle to an authenticated agent that does not have it yet."""
    data = read_envelope(request, MAX_REQUEST_BYTES)
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

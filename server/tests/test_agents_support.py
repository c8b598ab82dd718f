"""Helpers shared by the agents tests (this module holds no tests).

:class:`FakeAgent` is a real agent identity as far as the server can tell: keys
made here with PyNaCl, enrolled through the HTTP endpoint with a real token,
envelopes sealed with ``fleetroom_protocol.envelope.seal`` and sent through the
Django test client, replies verified with the server's public key.  Reading
payloads are the real agent's readings of the SYNTHETIC recordings (see
``test_fleet_support``), so expected values come from the recording files.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from fleetroom.agents.keys import server_keys
from fleetroom.agents.models import Agent
from fleetroom.agents.services import do_create_enrollment_token
from fleetroom.core.scoping import SYSTEM
from fleetroom_protocol.envelope import SERVER, Kind, seal, split, verify
from fleetroom_protocol.keys import encode_key, enroll_proof_message
from fleetroom_protocol.messages import (
    CONTENT_TYPE,
    PATH_ENROLL,
    PATH_MESSAGES,
    AgentState,
    EnrollRequest,
    EnrollResponse,
    PollBody,
    Reply,
    encode_batch_body,
)
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from server.tests.test_fleet_support import agent_json, make_tree  # noqa: F401 (re-export)

SOURCE_IP = "198.51.100.7"


def enroll_request(token: str, signing: SigningKey | None = None,
                   encryption: PrivateKey | None = None, *, hostname: str = "pc-1",
                   proof_key: SigningKey | None = None) -> tuple[EnrollRequest, SigningKey]:
    """A correct enrollment request (``proof_key`` signs the proof instead, to break it)."""
    signing = signing or SigningKey.generate()
    encryption = encryption or PrivateKey.generate()
    sk, ek = encode_key(signing.verify_key), encode_key(encryption.public_key)
    proof = (proof_key or signing).sign(enroll_proof_message(token, sk, ek)).signature
    req = EnrollRequest(token=token, signing_key=sk, encryption_key=ek,
                        proof=base64.b64encode(proof).decode(), hostname=hostname,
                        version="0.1.0", platform="linux")
    return req, signing


def post_enroll(client: Client, req: EnrollRequest | dict[str, Any], *,
                ip: str = SOURCE_IP) -> Any:
    """POST the request as JSON from ``ip``."""
    body = req.model_dump_json() if isinstance(req, EnrollRequest) else json.dumps(req)
    return client.post(PATH_ENROLL, data=body, content_type="application/json",
                       REMOTE_ADDR=ip)


def new_token(tenant: Any, **kwargs: Any) -> str:
    """A fresh clear token for ``tenant`` (made by the system actor)."""
    return do_create_enrollment_token(tenant, acting_user=SYSTEM, **kwargs)[1]


class FakeAgent:
    """An enrolled agent driven by the test."""

    def __init__(self, client: Client, tenant: Any, *, hostname: str = "pc-1",
                 ip: str = SOURCE_IP) -> None:
        self.client = client
        self.ip = ip
        token = new_token(tenant)
        req, self.signing_key = enroll_request(token, hostname=hostname)
        response = post_enroll(client, req, ip=ip)
        assert response.status_code == 201, response.content
        self.enrolled = EnrollResponse.model_validate_json(response.content)
        self.agent_id = self.enrolled.agent_id
        self.store = secrets.token_hex(8)
        self._ctr = itertools.count(1)
        self._seq: dict[str, itertools.count[int]] = {}
        self.last_ctr = 0

    @property
    def row(self) -> Agent:
        """The server's row for this agent (fresh)."""
        return Agent.objects.get(public_id=self.agent_id)

    def next_ctr(self) -> int:
        """A new message counter."""
        self.last_ctr = next(self._ctr)
        return self.last_ctr

    def items(self, stream: str, payloads: Iterable[bytes | str | dict[str, Any]],
              ) -> list[tuple[str, str, int, int, float, bytes]]:
        """Outbox-like items with consecutive sequence numbers per stream."""
        counter = self._seq.setdefault(stream, itertools.count(1))
        out = []
        for p in payloads:
            raw = (p if isinstance(p, bytes) else p.encode() if isinstance(p, str)
                   else json.dumps(p).encode())
            out.append((self.store, stream, next(counter), 0, 1_700_000_000.0, raw))
        return out

    def batch(self, items: Sequence[tuple[str, str, int, int, float, bytes]], *,
              state: AgentState | None = None, ctr: int | None = None, to: str = SERVER,
              now: datetime | None = None, key: SigningKey | None = None,
              compress: bool = True) -> bytes:
        """A sealed batch envelope."""
        body = encode_batch_body(items, state or AgentState(hostname="pc-1"))
        return self.seal(body, kind="batch", ctr=ctr, to=to, now=now, key=key,
                         compress=compress)

    def poll(self, *, state: AgentState | None = None, ctr: int | None = None) -> bytes:
        """A sealed poll envelope."""
        body = PollBody(state=state or AgentState()).model_dump_json().encode()
        return self.seal(body, kind="poll", ctr=ctr)

    def seal(self, body: bytes, *, kind: Kind, ctr: int | None = None, to: str = SERVER,
             now: datetime | None = None, key: SigningKey | None = None,
             compress: bool = True) -> bytes:
        """Any body, sealed as this agent."""
        return seal(body, signing_key=key or self.signing_key, sender=self.agent_id, to=to,
                    ctr=self.next_ctr() if ctr is None else ctr, kind=kind, now=now,
                    compress=compress)

    def send(self, envelope: bytes, *, ip: str | None = None) -> Any:
        """POST an envelope; the Django test response."""
        return self.client.post(PATH_MESSAGES, data=envelope, content_type=CONTENT_TYPE,
                                REMOTE_ADDR=ip or self.ip)

    def reply(self, response: Any, *, reply_to: int | None = None) -> Reply:
        """The verified reply: signed by the server, to this agent, answering ``reply_to``."""
        sealed = split(response.content)
        verify(sealed, server_keys().verify_key)
        assert sealed.header.sender == SERVER
        assert sealed.header.to == self.agent_id
        assert sealed.header.kind == "reply"
        assert sealed.header.reply_to == (self.last_ctr if reply_to is None else reply_to)
        return Reply.model_validate_json(_body(sealed))


def _body(sealed: Any) -> bytes:
    from fleetroom_protocol.envelope import body_bytes

    return body_bytes(sealed)


def clear_limits() -> None:
    """The source-failure and enrollment limits live in the shared cache; each test
    starts clean.  (Agent and tenant request counters are database rows, rolled
    back with each test's transaction.)"""
    cache.clear()


# Fixtures for the agent test modules, which import them by these names (the
# fixture names differ, so a test's ``tree`` argument does not shadow the import).

@pytest.fixture(name="_clean_limits", autouse=True)
def clean_limits_fixture() -> Iterator[None]:
    """Autouse where imported: clean rate-limit counters before and after each test."""
    clear_limits()
    yield
    clear_limits()


@pytest.fixture(name="tree")
def tree_fixture() -> dict[str, Any]:
    return make_tree()

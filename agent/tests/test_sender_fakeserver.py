"""A small Fleetroom server for the agent's delivery tests, and tests of the fake itself.

It follows the protocol contract the real server (``fleetroom.agents.receive``)
implements: verify the agent's signature before parsing, refuse replayed counters,
store items under the unique key (store, stream, seq) — a repeat is harmless —,
acknowledge with ``AckRange``s only what is stored, and answer with a reply sealed
by the server key, addressed to the agent, ``reply_to`` = the request's counter.
Faults are injected per request from a queue, so a test says exactly which
request fails and how.

Served by hypercorn (HTTP/2 over TLS with certificates from trustme, or plain
HTTP) on 127.0.0.1 with a kernel-chosen port.  Other agent test modules import
the helpers from here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import trustme
from fleetroom_protocol.envelope import SERVER, EnvelopeError, body_model, seal, split, verify
from fleetroom_protocol.keys import (
    decode_public_key,
    decode_verify_key,
    encode_key,
    enroll_proof_message,
)
from fleetroom_protocol.messages import (
    CONTENT_TYPE,
    PATH_ENROLL,
    PATH_MESSAGES,
    AckRange,
    BatchBody,
    Command,
    EnrollRequest,
    EnrollResponse,
    PollBody,
    Reply,
    Schedule,
)
from fleetroom_protocol.replay import ReplayState
from hypercorn.asyncio import serve
from hypercorn.config import Config
from nacl.exceptions import BadSignatureError
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# ------------------------------------------------------------------ serving helpers


@dataclass
class Certs:
    """A trustme CA and a server certificate for 127.0.0.1/localhost, written to files."""

    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    cert_pem: bytes


def make_certs(directory: Path, ca: trustme.CA | None = None) -> Certs:
    ca = ca or trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
    cert_file.write_bytes(chain)
    leaf.private_key_pem.write_to_path(str(key_file))
    return Certs(ca, ca_file, cert_file, key_file, leaf.cert_chain_pems[0].bytes())


@contextlib.asynccontextmanager
async def serve_app(app: App, *, certs: Certs | None = None,
                    alpn: list[str] | None = None) -> AsyncIterator[str]:
    """Run ``app`` under hypercorn on 127.0.0.1:<free port>; yield the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    if certs is not None:
        config.certfile = str(certs.cert_file)
        config.keyfile = str(certs.key_file)
        if alpn is not None:
            config.alpn_protocols = alpn
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    scheme = "https" if certs is not None else "http"
    base = f"{scheme}://127.0.0.1:{port}"
    for _ in range(200):  # wait until it accepts connections
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.01)
    try:
        yield base
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)


def free_port() -> int:
    """A port nothing listens on (bound and released: 'connection refused' there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


async def respond(send: Send, status: int, body: bytes, content_type: str = CONTENT_TYPE,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# ------------------------------------------------------------------------ the fake


@dataclass
class Request:
    """One envelope the fake received (after verification)."""

    at: float
    agent_id: str
    ctr: int
    kind: str
    keys: list[tuple[str, str, int]]
    fault: str | None
    http_version: str
    transport: str = ""
    """``AgentState.transport`` as the agent reported it."""


@dataclass
class FakeFleetroom:
    """Enrollment and message endpoints with injectable faults.

    ``faults``: consumed one per message request.  ``None`` = behave; otherwise
    ``"503"`` / ``"429:<retry-after>"`` (nothing stored), ``"bad-signature"``,
    ``"tampered"`` (right key, body altered), ``"wrong-agent"``, ``"wrong-reply-to"``,
    ``"commit-then-500"`` (stored, then the answer is lost), ``"suspend"`` (403 with
    a signed "suspended" reply), ``"ack-other-store"`` (stored, but acked under
    another store id), ``"413"`` (envelope too large, nothing stored).
    """

    signing_key: SigningKey = field(default_factory=SigningKey.generate)
    encryption_key: PrivateKey = field(default_factory=PrivateKey.generate)
    tokens: dict[str, str] = field(default_factory=dict)
    """token → refusal text ('' = valid)."""
    agents: dict[str, VerifyKey] = field(default_factory=dict)
    replay: dict[str, ReplayState] = field(default_factory=dict)
    stored: dict[tuple[str, str, str, int], bytes] = field(default_factory=dict)
    """(agent, store, stream, seq) → payload JSON as received."""
    duplicates: int = 0
    faults: list[str | None] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    schedule: Schedule | None = None
    enrollments: list[EnrollRequest] = field(default_factory=list)
    server_ctr: int = 0

    def add_agent(self, agent_id: str, verify_key: VerifyKey) -> None:
        self.agents[agent_id] = verify_key

    def seal_reply(self, reply: Reply, *, to: str, reply_to: int | None,
                   key: SigningKey | None = None, kind: str = "reply") -> bytes:
        self.server_ctr += 1
        return seal(reply, signing_key=key or self.signing_key, sender=SERVER, to=to,
                    ctr=self.server_ctr, kind=kind, reply_to=reply_to)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        if scope["method"] == "POST" and scope["path"] == PATH_ENROLL:
            await self._enroll(body, send)
        elif scope["method"] == "POST" and scope["path"] == PATH_MESSAGES:
            await self._message(body, send, scope.get("http_version", "?"))
        else:
            await respond(send, 404, b'{"detail": "not found"}', "application/json")

    async def _enroll(self, body: bytes, send: Send) -> None:
        try:
            req = EnrollRequest.model_validate_json(body)
        except ValueError:
            await respond(send, 400, b'{"detail": "malformed request"}', "application/json")
            return
        refusal = self.tokens.get(req.token, "unknown token")
        if refusal:
            await respond(send, 403, json.dumps({"detail": refusal}).encode(),
                          "application/json")
            return
        vk = decode_verify_key(req.signing_key)
        decode_public_key(req.encryption_key)
        try:
            vk.verify(enroll_proof_message(req.token, req.signing_key, req.encryption_key),
                      base64.b64decode(req.proof))
        except BadSignatureError:
            await respond(send, 400, b'{"detail": "proof does not verify"}',
                          "application/json")
            return
        self.tokens[req.token] = "token already used"
        self.enrollments.append(req)
        agent_id = str(uuid.uuid4())
        self.add_agent(agent_id, vk)
        answer = EnrollResponse(agent_id=agent_id, tenant="acme", site="hq",
                                server_signing_key=encode_key(self.signing_key.verify_key),
                                server_encryption_key=encode_key(self.encryption_key.public_key),
                                schedule=Schedule(version=1, command_poll_s=60))
        await respond(send, 201, answer.model_dump_json().encode(), "application/json")

    async def _message(self, body: bytes, send: Send, http_version: str) -> None:
        try:
            sealed = split(body)
            key = self.agents.get(sealed.header.sender)
            if key is None:
                await respond(send, 401, b"")
                return
            verify(sealed, key)
        except EnvelopeError:
            await respond(send, 401, b"")
            return
        h = sealed.header
        verdict, new_state = self.replay.get(h.sender, ReplayState()).check(h.ctr)
        if verdict != "new":
            self.violations.append(f"{verdict} counter {h.ctr}")
            await respond(send, 403, b"")
            return
        self.replay[h.sender] = new_state
        fault = self.faults.pop(0) if self.faults else None
        keys: list[tuple[str, str, int]] = []
        items = []
        if h.kind == "batch":
            batch = body_model(sealed, BatchBody)
            items, transport = batch.items, batch.state.transport
            keys = [(i.store, i.stream, i.seq) for i in items]
        else:
            transport = body_model(sealed, PollBody).state.transport
        self.requests.append(Request(time.monotonic(), h.sender, h.ctr, h.kind, keys, fault,
                                     http_version, transport))
        if fault == "413":
            await respond(send, 413, b'{"detail": "envelope too large"}', "application/json")
            return
        if fault == "503" or (fault or "").startswith("429"):
            status = 503 if fault == "503" else 429
            after = (fault or "").partition(":")[2]
            extra = [(b"retry-after", after.encode())] if after else []
            await respond(send, status, b'{"detail": "busy"}', "application/json", extra)
            return
        for item in items:  # "commit"
            k = (h.sender, item.store, item.stream, item.seq)
            if k in self.stored:
                self.duplicates += 1
            else:
                self.stored[k] = json.dumps(item.payload, sort_keys=True).encode()
        if fault == "commit-then-500":
            await respond(send, 500, b'{"detail": "lost"}', "application/json")
            return
        acked = ranges(keys)
        if fault == "ack-other-store":
            acked = [AckRange(store="not-" + r.store, stream=r.stream, first=r.first,
                              last=r.last) for r in acked]
        reply = Reply(acked=acked, commands=list(self.commands), schedule=self.schedule)
        to, reply_to, signer = h.sender, h.ctr, self.signing_key
        if fault == "bad-signature":
            signer = SigningKey.generate()
        elif fault == "wrong-agent":
            to = str(uuid.uuid4())
        elif fault == "wrong-reply-to":
            reply_to = h.ctr + 1
        elif fault == "suspend":
            reply = Reply(status="suspended", message="five policy violations")
            await respond(send, 403, self.seal_reply(reply, to=to, reply_to=reply_to))
            return
        sealed_reply = self.seal_reply(reply, to=to, reply_to=reply_to, key=signer)
        if fault == "tampered":  # same key id, same length, one bit flipped in the body
            sealed_reply = sealed_reply[:-1] + bytes([sealed_reply[-1] ^ 1])
        await respond(send, 200, sealed_reply,
                      headers=[(b"date", formatdate(usegmt=True).encode())])


def ranges(keys: list[tuple[str, str, int]]) -> list[AckRange]:
    """Consecutive seqs of one (store, stream) as inclusive ranges."""
    out: list[AckRange] = []
    for store, stream, seq in sorted(set(keys)):
        last = out[-1] if out else None
        if last and (last.store, last.stream) == (store, stream) and seq == last.last + 1:
            out[-1] = AckRange(store=store, stream=stream, first=last.first, last=seq)
        else:
            out.append(AckRange(store=store, stream=stream, first=seq, last=seq))
    return out


# ------------------------------------------------------------- tests of the fake


def test_ranges_compress_consecutive_seqs_per_stream():
    got = ranges([("s", "a", 1), ("s", "a", 2), ("s", "a", 4), ("s", "b", 3), ("s", "a", 2)])
    assert [(r.stream, r.first, r.last) for r in got] == [("a", 1, 2), ("a", 4, 4), ("b", 3, 3)]


async def test_fake_refuses_a_replayed_counter_and_an_unknown_signer(tmp_path):
    import httpx

    fake = FakeFleetroom()
    agent_key = SigningKey.generate()
    fake.add_agent("a1", agent_key.verify_key)
    env = seal(PollBody(), signing_key=agent_key, sender="a1", to=SERVER, ctr=7, kind="poll")
    stranger = seal(PollBody(), signing_key=SigningKey.generate(), sender="a1", to=SERVER,
                    ctr=8, kind="poll")
    async with serve_app(fake) as base, httpx.AsyncClient() as client:
        first = await client.post(base + PATH_MESSAGES, content=env)
        again = await client.post(base + PATH_MESSAGES, content=env)
        forged = await client.post(base + PATH_MESSAGES, content=stranger)
    assert first.status_code == 200
    reply = split(first.content)
    verify(reply, fake.signing_key.verify_key)
    assert (reply.header.to, reply.header.reply_to) == ("a1", 7)
    assert again.status_code == 403
    assert fake.violations == ["replayed counter 7"]
    assert forged.status_code == 401

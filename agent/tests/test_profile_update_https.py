"""``check_and_apply`` over real HTTPS (TLS from a trustme CA, the agent's CA file):
the request it signs, the reply it accepts, and whose clock judges expiry.

The server here is a small stand-in for ``POST /agent/v1/profiles/latest`` that
follows the contract (verify the agent's signature first, 204 when nothing is newer,
otherwise a reply sealed with the server key answering the request's counter, the
bundle as its body); its clock and its faults are set per test.  The real server
is exercised with this same agent code in ``server/tests/test_agents_bundles_e2e.py``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from fleetroom_agent.identity import AgentIdentity, CounterStore
from fleetroom_agent.profile_update import (
    ProfileUpdateError,
    check_and_apply,
    installed_version,
    load_profiles,
    read_state,
)
from fleetroom_protocol.envelope import SERVER, body_model, seal, split, verify
from fleetroom_protocol.messages import CONTENT_TYPE, PATH_PROFILES, PollBody
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from packages.profiles.tests.test_bundle_corpus import ALIAS_BOMB, KEY, NOW, good_bundle

AGENT_ID = "3d8f4b52-9c1e-4a57-8f0b-2f6c1d7e9a10"
AGENT_KEY = SigningKey.generate()


@dataclass
class Stand:
    """What the stand-in server does and what it saw."""

    bundle: bytes | None = None
    version: int = 0
    clock: datetime = NOW
    key: SigningKey = KEY
    fault: str = ""
    seen: list[tuple[int, int | None, str]] = field(default_factory=list)
    """(counter, profiles_version, content type) of every authenticated request."""


def _handler(stand: Stand) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != PATH_PROFILES:
                self._send(404)
                return
            sealed = split(data)
            try:
                verify(sealed, AGENT_KEY.verify_key)
            except Exception:
                self._send(401)
                return
            if sealed.header.sender != AGENT_ID or sealed.header.kind != "poll":
                self._send(401)
                return
            have = body_model(sealed, PollBody).state.profiles_version
            stand.seen.append((sealed.header.ctr, have, self.headers["Content-Type"]))
            if stand.fault.startswith("status:"):
                self._send(int(stand.fault.split(":")[1]))
                return
            if stand.bundle is None or stand.version <= (have or 0):
                self._send(204)
                return
            reply_to = sealed.header.ctr - 1 if stand.fault == "stale-reply" else sealed.header.ctr
            to = "someone-else" if stand.fault == "wrong-recipient" else AGENT_ID
            self._send(200, seal(stand.bundle, signing_key=stand.key, sender=SERVER, to=to,
                                 ctr=1, kind="reply", reply_to=reply_to, compress=False,
                                 now=stand.clock))

    return Handler


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


@pytest.fixture
def stand(tls) -> Iterator[tuple[Stand, str]]:
    ca, _ = tls
    state = Stand()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def identity(stand, tls) -> AgentIdentity:
    _, url = stand
    return AgentIdentity(agent_id=AGENT_ID, server_url=url, signing_key=AGENT_KEY,
                         encryption_key=PrivateKey.generate(), server_verify_key=KEY.verify_key,
                         server_public_key=PrivateKey.generate().public_key, tenant="t",
                         ca_file=str(tls[1]))


def run(identity: AgentIdentity, data_dir: Path, **kw) -> str:
    return asyncio.run(check_and_apply(identity, data_dir, **kw))


def test_fetch_over_tls_installs_and_then_says_up_to_date(stand, identity, tmp_path):
    server, _ = stand
    data_dir = tmp_path / "agent"
    assert run(identity, data_dir) == "profiles are up to date (bundle 0)"
    server.bundle, server.version = good_bundle(3), 3
    assert run(identity, data_dir).startswith("installed profile bundle 3 (")
    assert run(identity, data_dir) == "profiles are up to date (bundle 3)"
    # The agent told the server what it held, in the signed body, with fresh counters.
    assert [(have, ctype) for _, have, ctype in server.seen] == [
        (0, CONTENT_TYPE), (0, CONTENT_TYPE), (3, CONTENT_TYPE)]
    counters = [ctr for ctr, _, _ in server.seen]
    assert counters == sorted(set(counters))
    assert CounterStore(data_dir).peek_mark() > counters[-1]
    assert "hp" in load_profiles(data_dir).profiles
    assert read_state(data_dir).trusted_time == NOW


def test_the_runtime_counter_is_used_when_given(stand, identity, tmp_path):
    server, _ = stand
    data_dir = tmp_path / "agent"
    counter = CounterStore(data_dir)
    first = counter.next()
    run(identity, data_dir, counter=counter)
    assert server.seen[0][0] == first + 1


def test_the_server_clock_judges_expiry_not_the_agent_clock(stand, identity, tmp_path):
    """The bundle was made at NOW (2025-06-01) for 30 days; this machine's clock is
    somewhere else entirely.  The server's signed, fresh time decides both ways."""
    server, _ = stand
    data_dir = tmp_path / "agent"
    server.bundle, server.version = good_bundle(3), 3
    server.clock = NOW + timedelta(days=31)
    with pytest.raises(ProfileUpdateError) as caught:
        run(identity, data_dir)
    assert caught.value.code == "expired"
    assert "time used: 2025-07-02 12:00 UTC" in caught.value.message
    assert installed_version(data_dir) == 0
    server.clock = NOW + timedelta(days=29)
    assert run(identity, data_dir).startswith("installed profile bundle 3")
    assert abs(datetime.now(UTC) - NOW) > timedelta(days=31)  # the local clock disagreed


@pytest.mark.parametrize(("fault", "code", "words"), [
    ("stale-reply", "reply", "does not answer this request"),
    ("wrong-recipient", "reply", "does not answer this request"),
    ("status:403", "refused", "HTTP 403"),
    ("status:401", "refused", "HTTP 401"),
    ("status:500", "http", "HTTP 500"),
    ("status:429", "busy", "server busy"),
])
def test_bad_answers_are_refused_and_nothing_changes(stand, identity, tmp_path, fault, code,
                                                     words):
    server, _ = stand
    data_dir = tmp_path / "agent"
    server.bundle, server.version = good_bundle(3), 3
    run(identity, data_dir)
    server.bundle, server.version, server.fault = good_bundle(4), 4, fault
    with pytest.raises(ProfileUpdateError) as caught:
        run(identity, data_dir)
    assert caught.value.code == code
    assert words in caught.value.message
    assert installed_version(data_dir) == 3
    assert read_state(data_dir).last_error == caught.value.message


def test_a_reply_signed_by_another_key_is_refused(stand, identity, tmp_path):
    server, _ = stand
    server.bundle, server.version, server.key = good_bundle(3), 3, SigningKey.generate()
    with pytest.raises(ProfileUpdateError) as caught:
        run(identity, tmp_path / "agent")
    assert caught.value.code == "reply"
    assert "signed with another key" in caught.value.message


def test_a_hostile_bundle_from_the_server_is_refused(stand, identity, tmp_path):
    server, _ = stand
    data_dir = tmp_path / "agent"
    server.bundle, server.version = good_bundle(3), 3
    run(identity, data_dir)
    server.bundle = good_bundle(4, extra={"vendors/laughs.yaml": ALIAS_BOMB})
    server.version = 4
    with pytest.raises(ProfileUpdateError) as caught:
        run(identity, data_dir)
    assert caught.value.code == "unsafe-yaml"
    assert installed_version(data_dir) == 3


def test_an_untrusted_certificate_is_a_clear_network_error(stand, identity, tmp_path):
    from dataclasses import replace

    other_ca = trustme.CA()
    ca_file = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(ca_file))
    with pytest.raises(ProfileUpdateError) as caught:
        run(replace(identity, ca_file=str(ca_file)), tmp_path / "agent")
    assert caught.value.code == "network"
    assert "not trusted" in caught.value.message

"""The e-mail transport against a real SMTP server (aiosmtpd on loopback, trustme TLS)."""

from __future__ import annotations

import os
import socket
import ssl

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from fleetroom_agent.identity import AgentIdentity
from fleetroom_agent.transports.base import Transport, TransportError
from fleetroom_agent.transports.smtp import SmtpSettings, SmtpTransport
from fleetroom_protocol import envelope as env
from fleetroom_protocol import mail
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from pydantic import ValidationError

SERVER_BOX = PrivateKey.generate()
USER, PASSWORD = "agent-7", "s3cret-pass"


def _identity(mail_to: str | None = "intake@fleet.test") -> AgentIdentity:
    return AgentIdentity(agent_id="0b8f9a4e-1c52-4a57-b3c1-2f6f0e1d9a10",
                         server_url="https://fleet.test", signing_key=SigningKey.generate(),
                         encryption_key=PrivateKey.generate(),
                         server_verify_key=SigningKey.generate().verify_key,
                         server_public_key=SERVER_BOX.public_key, tenant="1",
                         mail_to=mail_to)


def _envelope(identity: AgentIdentity, size: int, ctr: int = 1) -> bytes:
    return env.seal(os.urandom(size), signing_key=identity.signing_key,
                    sender=identity.agent_id, to=env.SERVER, ctr=ctr, kind="batch",
                    compress=False)


class Inbox:
    """Keeps every mail as received; answers DATA with ``reply`` (default 250)."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], bytes, bool]] = []
        self.reply = "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos),
                           envelope.original_content, session.ssl is not None))
        return self.reply


def _auth(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and \
        (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _server_tls(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(inbox: Inbox, **kw) -> tuple[Controller, int]:
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            server_hostname="intake.test", **kw)
    controller.start()
    return controller, port


@pytest.fixture
def starttls_server(ca):
    inbox = Inbox()
    controller, port = _start(inbox, tls_context=_server_tls(ca), require_starttls=True,
                              auth_required=True, authenticator=_auth,
                              data_size_limit=2_000_000)
    yield inbox, port
    controller.stop()


def _settings(port: int, ca_file, **kw) -> SmtpSettings:
    args = {"host": "127.0.0.1", "port": port, "username": USER, "password": PASSWORD,
            "mail_from": "agent-7@customer.test", "ca_file": ca_file} | kw
    return SmtpSettings(**args)


def _decrypt(raws: list[bytes]) -> bytes:
    r = mail.Reassembler()
    done = None
    for raw in raws:
        done = r.add(mail.open_part(mail.extract_part(raw), server_key=SERVER_BOX)) or done
    assert done is not None
    return done.data


async def test_envelope_is_mailed_over_starttls_encrypted_and_comes_back_intact(
        starttls_server, ca_file):
    inbox, port = starttls_server
    identity = _identity()
    transport = SmtpTransport(_settings(port, ca_file), identity)
    assert isinstance(transport, Transport)
    data = _envelope(identity, 5000)
    assert await transport.exchange(data) is None  # one-way
    await transport.aclose()
    assert len(inbox.mails) == 1
    sender, rcpts, raw, over_tls = inbox.mails[0]
    assert (sender, rcpts, over_tls) == ("agent-7@customer.test", ["intake@fleet.test"], True)
    assert data not in raw
    got = _decrypt([raw])
    assert got == data
    env.verify(env.split(got), identity.signing_key.verify_key)


async def test_large_envelope_is_chunked_into_capped_mails(starttls_server, ca_file):
    inbox, port = starttls_server
    identity = _identity()
    cap = 40_000
    transport = SmtpTransport(_settings(port, ca_file, max_mail_bytes=cap), identity)
    data = _envelope(identity, 150_000)
    await transport.exchange(data)
    raws = [m[2] for m in inbox.mails]
    assert len(raws) == -(-len(data) // mail.chunk_bytes(cap))
    assert len(raws) >= 4
    # aiosmtpd hands over the data as received (line ends normalised to CRLF)
    assert all(len(raw) <= cap + 200 for raw in raws)
    assert _decrypt(list(reversed(raws))) == data


async def test_implicit_tls_works(ca, ca_file):
    inbox = Inbox()
    client_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(client_side)
    controller, port = _start(inbox, ssl_context=client_side)
    try:
        identity = _identity()
        transport = SmtpTransport(_settings(port, ca_file, security="tls", username=None,
                                            password=None), identity)
        data = _envelope(identity, 800)
        await transport.exchange(data)
    finally:
        controller.stop()
    assert _decrypt([inbox.mails[0][2]]) == data


async def test_server_without_starttls_is_refused():
    inbox = Inbox()
    controller, port = _start(inbox)
    try:
        transport = SmtpTransport(_settings(port, None, username=None, password=None),
                                  _identity())
        with pytest.raises(TransportError) as info:
            await transport.exchange(b"FR1 x")
    finally:
        controller.stop()
    assert info.value.code == "tls"
    assert "STARTTLS" in info.value.message
    assert inbox.mails == []


async def test_untrusted_certificate_is_refused(starttls_server):
    inbox, port = starttls_server
    transport = SmtpTransport(_settings(port, None), _identity())  # system CAs only
    with pytest.raises(TransportError) as info:
        await transport.exchange(b"FR1 x")
    assert info.value.code == "tls"
    assert inbox.mails == []


async def test_wrong_password_is_a_config_error(starttls_server, ca_file):
    inbox, port = starttls_server
    transport = SmtpTransport(_settings(port, ca_file, password="wrong"), _identity())
    with pytest.raises(TransportError) as info:
        await transport.exchange(b"FR1 x")
    assert info.value.code == "config"
    assert inbox.mails == []


async def test_temporary_refusal_asks_to_retry_later(starttls_server, ca_file):
    inbox, port = starttls_server
    inbox.reply = "451 4.3.0 Try again later"
    transport = SmtpTransport(_settings(port, ca_file), _identity())
    with pytest.raises(TransportError) as info:
        await transport.exchange(b"FR1 x")
    assert (info.value.code, info.value.status) == ("busy", 451)
    assert info.value.retry_after is not None
    assert info.value.retry_after > 0


async def test_permanent_refusal_is_a_protocol_error(starttls_server, ca_file):
    inbox, port = starttls_server
    inbox.reply = "554 5.6.0 Refused"
    transport = SmtpTransport(_settings(port, ca_file), _identity())
    with pytest.raises(TransportError) as info:
        await transport.exchange(b"FR1 x")
    assert (info.value.code, info.value.status, info.value.retry_after) == \
        ("protocol", 554, None)


async def test_mails_over_the_servers_size_limit_are_not_sent(starttls_server, ca_file):
    inbox, port = starttls_server  # the server advertises SIZE 2000000
    identity = _identity()
    transport = SmtpTransport(_settings(port, ca_file, max_mail_bytes=3_000_000), identity)
    with pytest.raises(TransportError) as info:
        await transport.exchange(_envelope(identity, 2_500_000))
    assert info.value.code == "config"
    assert "2000000" in info.value.message
    assert inbox.mails == []


async def test_unreachable_server_is_a_network_error(ca_file):
    transport = SmtpTransport(_settings(_free_port(), ca_file), _identity())
    with pytest.raises(TransportError) as info:
        await transport.exchange(b"FR1 x")
    assert info.value.code == "network"


def test_plain_smtp_only_to_loopback():
    with pytest.raises(ValidationError, match="only to this machine"):
        SmtpSettings(host="mail.example.com", security="none", mail_from="a@b.test")
    assert SmtpSettings(host="127.0.0.1", security="none", mail_from="a@b.test").port == 587


def test_an_intake_address_is_required():
    settings = SmtpSettings(host="127.0.0.1", mail_from="a@b.test")
    with pytest.raises(TransportError) as info:
        SmtpTransport(settings, _identity(mail_to=None))
    assert info.value.code == "config"
    override = SmtpSettings(host="127.0.0.1", mail_from="a@b.test", mail_to="x@y.test")
    assert SmtpTransport(override, _identity(mail_to=None)).mail_to == "x@y.test"


async def test_plain_loopback_delivery_for_local_relays():
    inbox = Inbox()
    controller, port = _start(inbox)
    try:
        identity = _identity()
        transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, security="none",
                                               mail_from="a@b.test"), identity)
        data = _envelope(identity, 100)
        await transport.exchange(data)
    finally:
        controller.stop()
    assert inbox.mails[0][3] is False
    assert _decrypt([inbox.mails[0][2]]) == data

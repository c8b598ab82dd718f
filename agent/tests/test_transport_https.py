"""The HTTPS transport against real TLS servers on 127.0.0.1 (hypercorn, asyncio, trustme).

Covers: custom CA, unknown CA, public-key pin match and mismatch (checked before
any request byte is sent), a TLS 1.1-only server, HTTP/2 negotiation with HTTP/1.1
fallback, 429/503 with Retry-After (seconds and HTTP-date), redirects, a CONNECT
proxy, and the same pinning for plain sockets (the MQTT client's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import warnings
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fleetroom_agent.transports import TransportError
from fleetroom_agent.transports.https import HttpsTransport, parse_retry_after
from fleetroom_agent.transports.tls import (
    PinMismatchError,
    build_ssl_context,
    parse_pin,
    pin_of_certificate,
)
from fleetroom_protocol.messages import CONTENT_TYPE, PATH_MESSAGES

from agent.tests.test_sender_fakeserver import (
    free_port,
    lifespan,
    make_certs,
    read_body,
    respond,
    serve_app,
)


class Echo:
    """Answers every POST with ``b"reply:" + body``; records what it got."""

    def __init__(self, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None,
                 body: bytes | None = None) -> None:
        self.seen: list[tuple[str, str, bytes, str]] = []
        self.status, self.headers, self.body = status, headers or [], body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        ctype = dict(scope["headers"]).get(b"content-type", b"").decode()
        self.seen.append((scope["path"], scope["http_version"], body, ctype))
        await respond(send, self.status, self.body if self.body is not None else b"reply:" + body,
                      headers=self.headers)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


async def test_custom_ca_accepted_and_http2_negotiated(certs):
    app = Echo()
    async with serve_app(app, certs=certs) as base:
        t = HttpsTransport(base, ca_file=certs.ca_file)
        try:
            assert await t.exchange(b"envelope-1") == b"reply:envelope-1"
            assert await t.exchange(b"envelope-2") == b"reply:envelope-2"
        finally:
            await t.aclose()
    assert t.last_http_version == "HTTP/2"
    assert [(p, v, b, c) for p, v, b, c in app.seen] == [
        (PATH_MESSAGES, "2", b"envelope-1", CONTENT_TYPE),
        (PATH_MESSAGES, "2", b"envelope-2", CONTENT_TYPE)]


async def test_http11_when_the_server_offers_no_h2(certs):
    app = Echo()
    async with serve_app(app, certs=certs, alpn=["http/1.1"]) as base:
        t = HttpsTransport(base, ca_file=certs.ca_file)
        try:
            assert await t.exchange(b"x") == b"reply:x"
        finally:
            await t.aclose()
    assert t.last_http_version == "HTTP/1.1"
    assert app.seen[0][1] == "1.1"


async def test_unknown_ca_is_refused(certs, tmp_path):
    other = make_certs(tmp_path / "other")  # a different CA entirely
    app = Echo()
    async with serve_app(app, certs=certs) as base:
        for kwargs in ({"ca_file": other.ca_file}, {}):  # wrong CA file; system store
            t = HttpsTransport(base, **kwargs)
            with pytest.raises(TransportError) as info:
                await t.exchange(b"secret")
            await t.aclose()
            assert info.value.code == "tls"
            assert "not trusted" in info.value.message
            assert "--ca-file" in info.value.message
    assert app.seen == []


async def test_pin_match_and_mismatch(certs, tmp_path):
    app = Echo()
    right = pin_of_certificate(certs.cert_pem)
    other_key_pin = pin_of_certificate(make_certs(tmp_path / "o").cert_pem)
    async with serve_app(app, certs=certs) as base:
        good = HttpsTransport(base, ca_file=certs.ca_file, pins=(other_key_pin, right))
        try:
            assert await good.exchange(b"pinned") == b"reply:pinned"
        finally:
            await good.aclose()
        bad = HttpsTransport(base, ca_file=certs.ca_file, pins=(other_key_pin,))
        for _ in range(2):  # every new connection is checked, not only the first
            with pytest.raises(TransportError) as info:
                await bad.exchange(b"must-not-arrive")
            assert info.value.code == "pin"
            assert right in info.value.message  # names the key it saw
        await bad.aclose()
    assert [b for _, _, b, _ in app.seen] == [b"pinned"]  # nothing sent on a mismatch


def test_pin_text_forms(certs):
    pin = pin_of_certificate(certs.cert_pem)
    digest = parse_pin(pin)
    assert parse_pin("sha256//" + pin.split(":", 1)[1]) == digest
    assert parse_pin("sha256:" + digest.hex()) == digest
    for bad in ("md5:abcd", "sha256:not-base64!", "sha256:" + "ab" * 31):
        with pytest.raises(ValueError, match="pin"):
            parse_pin(bad)


async def test_tls11_only_server_is_refused(certs):
    """The server really speaks TLS 1.1 (a lenient client connects); the agent refuses."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certs.ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    got: list[bytes] = []

    async def handle(reader, writer):
        with contextlib.suppress(Exception):
            got.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        lenient = ssl.create_default_context()
        certs.ca.configure_trust(lenient)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            lenient.minimum_version = ssl.TLSVersion.TLSv1_1
        lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port, ssl=lenient)
        except (ssl.SSLError, ConnectionResetError):
            pytest.skip("this OpenSSL build cannot speak TLS 1.1 at all (nothing to refuse)")
        assert w.get_extra_info("ssl_object").version() == "TLSv1.1"
        w.close()
        t = HttpsTransport(f"https://127.0.0.1:{port}", ca_file=certs.ca_file)
        with pytest.raises(TransportError) as info:
            await t.exchange(b"must-not-arrive")
        await t.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.code == "tls"
    assert "older than 1.2" in info.value.message
    assert not any(b"must-not-arrive" in g for g in got)
    assert build_ssl_context().minimum_version == ssl.TLSVersion.TLSv1_2


async def test_busy_with_retry_after_seconds_and_http_date(certs):
    server_now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # far from the local clock
    for status, header, expected in (
        (429, b"7", 7.0),
        (503, format_datetime(server_now + timedelta(seconds=120), usegmt=True).encode(),
         120.0),
    ):
        app = Echo(status, [(b"retry-after", header),
                            (b"date", format_datetime(server_now, usegmt=True).encode())],
                   b'{"detail": "busy"}')
        async with serve_app(app, certs=certs) as base:
            t = HttpsTransport(base, ca_file=certs.ca_file)
            with pytest.raises(TransportError) as info:
                await t.exchange(b"e")
            await t.aclose()
        assert info.value.code == "busy"
        assert info.value.status == status
        assert info.value.retry_after == pytest.approx(expected, abs=1)


def test_retry_after_parsing_edge_cases():
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("99999999") == 86400.0
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past) == 0.0


async def test_http_error_shows_the_servers_json_and_keeps_a_signed_reply(certs):
    app = Echo(403, body=b"FR1 not-really-an-envelope")
    async with serve_app(app, certs=certs) as base:
        t = HttpsTransport(base, ca_file=certs.ca_file)
        with pytest.raises(TransportError) as info:
            await t.exchange(b"e")
        await t.aclose()
    assert (info.value.code, info.value.status) == ("http", 403)
    assert info.value.reply == b"FR1 not-really-an-envelope"
    app = Echo(400, body=b'{"detail": "batch too old"}')
    app.headers = []
    async with serve_app(app, certs=certs) as base:
        t = HttpsTransport(base, ca_file=certs.ca_file)
        with pytest.raises(TransportError) as info:
            await t.exchange(b"e")
        await t.aclose()
    assert "HTTP 400" in info.value.message
    assert info.value.reply is None


async def test_redirect_to_another_host_is_not_followed(certs):
    class Redirect(Echo):
        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["path"] == PATH_MESSAGES:
                await read_body(receive)
                self.seen.append((scope["path"], "", b"", ""))
                await respond(send, 307, b"", headers=[(b"location", self.target)])
                return
            await super().__call__(scope, receive, send)

    same = Redirect()
    same.target = b"/moved/messages"
    async with serve_app(same, certs=certs) as base:
        t = HttpsTransport(base, ca_file=certs.ca_file)
        assert await t.exchange(b"follow-me") == b"reply:follow-me"
        await t.aclose()
    assert [p for p, *_ in same.seen] == [PATH_MESSAGES, "/moved/messages"]

    away = Redirect()
    away.target = b"https://elsewhere.example/agent/v1/messages"
    async with serve_app(away, certs=certs) as base:
        t = HttpsTransport(base, ca_file=certs.ca_file)
        with pytest.raises(TransportError) as info:
            await t.exchange(b"stay")
        await t.aclose()
    assert "elsewhere.example" in info.value.message
    assert "not followed" in info.value.message
    assert len(away.seen) == 1


async def test_connection_refused_and_plain_http_rules():
    t = HttpsTransport(f"https://127.0.0.1:{free_port()}")
    with pytest.raises(TransportError) as info:
        await t.exchange(b"e")
    await t.aclose()
    assert info.value.code == "network"
    assert "refused" in info.value.message
    with pytest.raises(ValueError, match="plain http"):
        HttpsTransport("http://192.0.2.10:8000")


async def test_through_a_connect_proxy_with_the_pin_checked_end_to_end(certs, tmp_path):
    tunnels: list[bytes] = []

    async def proxy(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        tunnels.append(head.split(b"\r\n", 1)[0])
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        up_r, up_w = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pump(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    app = Echo()
    try:
        async with serve_app(app, certs=certs) as base:
            pin = pin_of_certificate(certs.cert_pem)
            t = HttpsTransport(base, ca_file=certs.ca_file, pins=(pin,), proxy=proxy_url)
            assert await t.exchange(b"via-proxy") == b"reply:via-proxy"
            await t.aclose()
            wrong = pin_of_certificate(make_certs(tmp_path / "x").cert_pem)
            t = HttpsTransport(base, ca_file=certs.ca_file, pins=(wrong,), proxy=proxy_url)
            with pytest.raises(TransportError) as info:
                await t.exchange(b"must-not-arrive")
            await t.aclose()
    finally:
        proxy_server.close()
    port = base.rsplit(":", 1)[1]
    assert tunnels[0] == f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode()
    assert info.value.code == "pin"
    assert [b for _, _, b, _ in app.seen] == [b"via-proxy"]


async def test_socket_pinning_for_blocking_clients(certs, tmp_path):
    """paho-mqtt (under aiomqtt) uses ``wrap_socket``: the pin applies there too."""
    app = Echo()
    async with serve_app(app, certs=certs) as base:
        port = int(base.rsplit(":", 1)[1])

        def handshake(pins):
            ctx = build_ssl_context(ca_file=certs.ca_file, pins=pins)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return tls.version()

        assert await asyncio.to_thread(handshake, (pin_of_certificate(certs.cert_pem),)) in {
            "TLSv1.2", "TLSv1.3"}
        wrong = pin_of_certificate(make_certs(tmp_path / "y").cert_pem)
        with pytest.raises(PinMismatchError):
            await asyncio.to_thread(handshake, (wrong,))


"""HTTPS transport: POST the envelope, get the sealed reply in the response body.

httpx with ``http2=True``: HTTP/2 when the server offers it in ALPN (one
connection multiplexes everything), HTTP/1.1 otherwise.  TLS settings, CA file
and pinning come from :mod:`.tls`.  The proxy is explicit (``proxy=``) rather
than taken from the environment, so a service behaves the same however it was
started.

Redirects: only a 307/308 to the *same* scheme, host and port is followed (a
server moving its endpoint); anything else is an error naming the target — an
envelope is never handed to a host the operator did not configure.

Plain ``http://`` is accepted only for loopback addresses (the demo and tests on
one machine); anything that leaves the host must use TLS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Final

import httpx
from fleetroom_protocol.envelope import MAGIC, MAX_ENVELOPE_BYTES
from fleetroom_protocol.messages import CONTENT_TYPE, PATH_MESSAGES

from fleetroom_agent.transports.base import TransportError
from fleetroom_agent.transports.tls import build_ssl_context, describe_tls_error

MAX_REDIRECTS: Final = 3
MAX_RETRY_AFTER_S: Final = 86400.0
"""A Retry-After beyond a day is treated as a day: the agent must come back."""
_BUSY: Final = frozenset({429, 503})
_REDIRECT_KEEP_METHOD: Final = frozenset({307, 308})


def normalise_server_url(url: str) -> str:
    """``https://host[:port][/prefix]`` without trailing slash; ValueError if unusable.

    Plain ``http`` is allowed only to a loopback host, so a typo cannot send
    envelopes (and enrollment tokens) across a network unencrypted.
    """
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL as exc:
        msg = f"server URL {url!r} is not a URL: {exc}"
        raise ValueError(msg) from None
    if parsed.scheme not in {"https", "http"} or not parsed.host:
        msg = f"server URL {url!r} must look like https://fleetroom.example.com"
        raise ValueError(msg)
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        msg = (f"server URL {url!r} uses plain http to a non-local host; use https "
               "(plain http is allowed for 127.0.0.1/::1/localhost only)")
        raise ValueError(msg)
    if parsed.query or parsed.fragment or parsed.userinfo:
        msg = f"server URL {url!r} must not have a query, fragment or user name"
        raise ValueError(msg)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}{parsed.path.rstrip('/')}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost`` or a loopback address)."""
    if host.lower() in {"localhost", "localhost.", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, *, server_date: str | None = None,
                      now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date).

    An HTTP-date is measured against the response's own ``Date`` header when
    there is one, so a wrong agent clock does not shorten (or stretch) the wait.
    Unparseable values give ``None`` (the sender then uses its own back-off).
    """
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    reference = now or datetime.now(UTC)
    if server_date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            reference = parsedate_to_datetime(server_date)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return min(max((when - reference).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def translate_error(exc: httpx.HTTPError, host: str) -> TransportError:
    """A :class:`TransportError` whose message says what went wrong and where."""
    chain = _chain(exc)
    if isinstance(exc, httpx.ConnectError):  # TLS errors later on are connection losses
        for inner in chain:
            if isinstance(inner, ssl.SSLError):
                code, message = describe_tls_error(inner, host)
                return TransportError(message, code="pin" if code == "pin" else "tls")
    if isinstance(exc, httpx.TimeoutException):
        phase = {httpx.ConnectTimeout: "connecting", httpx.ReadTimeout: "waiting for the reply",
                 httpx.WriteTimeout: "sending", httpx.PoolTimeout: "waiting for a connection",
                 }.get(type(exc), "talking")
        return TransportError(f"{host}: timed out while {phase}", code="timeout")
    if isinstance(exc, httpx.ProxyError):
        return TransportError(f"proxy refused the connection to {host}: {exc}", code="network")
    for inner in chain:
        if isinstance(inner, ConnectionRefusedError):
            return TransportError(f"{host}: connection refused (server down or wrong port?)",
                                  code="network")
        if isinstance(inner, socket.gaierror):
            return TransportError(f"{host}: cannot resolve the host name ({inner.strerror})",
                                  code="network")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return TransportError(f"{host}: connection lost ({exc or type(exc).__name__})",
                              code="network")
    detail = str(exc) or type(exc).__name__
    return TransportError(f"{host}: {detail}", code="network")


def json_error_text(body: bytes, content_type: str) -> str | None:
    """The server's own words from a JSON error (``detail``/``message``/``error``).

    The whole (compact) JSON when it has none of those; ``None`` for a body that
    is not JSON, so the caller can fall back to its raw text.
    """
    if "json" not in content_type:
        return None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(doc, dict):
        for key in ("detail", "message", "error"):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])[:500]
    return None if doc is None else json.dumps(doc, ensure_ascii=False)[:500]


def _error_text(body: bytes, content_type: str) -> str:
    """A short human text from an error response (the server's JSON error if any)."""
    text = json_error_text(body, content_type)
    if text is not None:
        return text
    if body.startswith(MAGIC):
        return "signed reply attached"
    return body[:200].decode("utf-8", "replace").strip()


def host_port(url: httpx.URL) -> str:
    """``host:port`` of ``url`` (the scheme's default port spelled out), for messages."""
    return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


class HttpsTransport:
    """The default transport; see the module docstring for the rules it keeps."""

    def __init__(self, server_url: str, *, name: str = "https",
                 ca_file: str | Path | None = None, pins: tuple[str, ...] = (),
                 proxy: str | None = None, connect_timeout_s: float = 10.0,
                 io_timeout_s: float = 60.0, http2: bool = True,
                 max_reply_bytes: int = MAX_ENVELOPE_BYTES,
                 user_agent: str = "fleetroom-agent") -> None:
        self.name = name
        self.server_url = normalise_server_url(server_url)
        self.url = httpx.URL(self.server_url + PATH_MESSAGES)
        self.max_reply_bytes = max_reply_bytes
        self.ssl_context = build_ssl_context(ca_file=ca_file, pins=pins)
        self.last_http_version: str | None = None
        """``HTTP/2`` or ``HTTP/1.1`` of the last response (status output, tests)."""
        self._client = make_client(self.ssl_context, proxy=proxy, http2=http2,
                                   connect_timeout_s=connect_timeout_s,
                                   io_timeout_s=io_timeout_s, user_agent=user_agent)

    @property
    def host(self) -> str:
        """``host:port`` for messages."""
        return host_port(self.url)

    async def exchange(self, envelope: bytes) -> bytes:
        """POST the envelope; the 200 response body is the (unverified) reply envelope."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, body = await self._post(url, envelope)
            if status in _REDIRECT_KEEP_METHOD and "location" in headers:
                target = url.join(headers["location"])
                if (target.scheme, target.host, target.port) != (url.scheme, url.host, url.port):
                    raise TransportError(
                        f"{self.host}: the server redirects to {target.scheme}://{target.host}"
                        f"{':' + str(target.port) if target.port else ''}; not followed "
                        "(another host); fix the configured server URL", code="http",
                        status=status)
                url = target
                continue
            return self._result(status, headers, body)
        raise TransportError(f"{self.host}: too many redirects", code="http")

    async def _post(self, url: httpx.URL, envelope: bytes) -> tuple[int, httpx.Headers, bytes]:
        try:
            async with self._client.stream(
                "POST", url, content=envelope,
                headers={"content-type": CONTENT_TYPE, "accept": CONTENT_TYPE},
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_reply_bytes:
                        raise TransportError(
                            f"{self.host}: reply larger than {self.max_reply_bytes} bytes",
                            code="protocol", status=response.status_code)
                self.last_http_version = response.http_version
                return response.status_code, response.headers, bytes(body)
        except httpx.HTTPError as exc:
            raise translate_error(exc, self.host) from exc

    def _result(self, status: int, headers: httpx.Headers, body: bytes) -> bytes:
        if status == 200:
            return body
        reply = body if body.startswith(MAGIC) else None
        text = _error_text(body, headers.get("content-type", ""))
        if status in _BUSY:
            wait = parse_retry_after(headers.get("retry-after"), server_date=headers.get("date"))
            hint = f"; retry after {wait:.0f} s" if wait is not None else ""
            raise TransportError(f"{self.host}: server busy (HTTP {status}){hint}",
                                 wait, code="busy", status=status, reply=reply)
        raise TransportError(f"{self.host}: HTTP {status}" + (f": {text}" if text else ""),
                             code="http", status=status, reply=reply)

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()


def make_client(ssl_context: ssl.SSLContext, *, proxy: str | None = None, http2: bool = True,
                connect_timeout_s: float = 10.0, io_timeout_s: float = 60.0,
                user_agent: str = "fleetroom-agent") -> httpx.AsyncClient:
    """The one way the agent builds HTTP clients (transport and enrollment alike)."""
    return httpx.AsyncClient(
        verify=ssl_context, http2=http2, proxy=proxy, trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(io_timeout_s, connect=connect_timeout_s),
        headers={"user-agent": user_agent},
    )

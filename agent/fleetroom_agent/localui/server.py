"""A minimal HTTP/1.1 server for the status page (asyncio streams, GET and HEAD only).

Rules it enforces, each for a reason:

* binds 127.0.0.1 and nothing else (the agent never listens on the network);
* the ``Host`` header must name the loopback address or ``localhost`` with this
  port, so a web page the technician happens to visit cannot read the status
  through DNS rebinding;
* HTTP Basic authentication against the scrypt hash, compared in constant time;
  after 5 failures in 5 minutes every login attempt gets 429 for 5 minutes, and
  each failure is answered only after a pause;
* request head at most 8 KiB, read within 10 s, one request per connection,
  no request bodies; responses are never cached and cannot be framed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..runtime.config import LOCALHOST, check_status_page_bind
from .page import render_message, render_page
from .password import PasswordError, PasswordHash, Throttle, load_password

log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192
READ_TIMEOUT_S: Final = 10.0
FAILURE_PAUSE_S: Final = 0.5
AUTH_CACHE_S: Final = 600.0
"""A verified Authorization header is remembered (as an HMAC) this long, so a page
refreshing itself does not pay scrypt every time."""
REALM: Final = 'Basic realm="fleetroom-agent status", charset="UTF-8"'
SECURITY_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
REASONS: Final = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  405: "Method Not Allowed", 421: "Misdirected Request",
                  429: "Too Many Requests", 431: "Request Header Fields Too Large",
                  500: "Internal Server Error", 503: "Service Unavailable"}

StatusFn = Callable[[], dict[str, Any]]


def read_only_status(data_dir: Path) -> StatusFn:
    """The default facts: :func:`..runtime.status_read.read_status` of ``data_dir``.

    Read-only on purpose — every request reads the outbox, and a request must
    never be able to migrate, quarantine or lock the running agent's store.
    """
    from ..runtime.status_read import read_status

    return lambda: read_status(data_dir)


class StatusPage:
    """The page server; ``start`` binds, ``serve_forever`` runs until cancelled."""

    def __init__(self, data_dir: Path, status: StatusFn | None = None, *,
                 host: str = LOCALHOST, port: int = 8765,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``status`` returns the facts to show (default: :func:`read_only_status`)."""
        check_status_page_bind(host)
        self.data_dir = data_dir
        self.status = status if status is not None else read_only_status(data_dir)
        self.host = host
        self.port = port
        self.monotonic = monotonic
        self.throttle = Throttle()
        self._server: asyncio.Server | None = None
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}

    async def start(self) -> int:
        """Bind and return the port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  reuse_address=True, limit=MAX_HEAD)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        log.info("status page on http://%s:%d/", self.host, self.port)
        return self.port

    async def serve_forever(self) -> None:
        """Serve until cancelled, then close the socket."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            async with self._server:
                await self._server.serve_forever()
        finally:
            self._server.close()

    # ------------------------------------------------------------------ requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except asyncio.LimitOverrunError:
                await self._send(writer, 431, b"request head too large\n", "text/plain")
                return
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            if len(head) > MAX_HEAD:
                await self._send(writer, 431, b"request head too large\n", "text/plain")
                return
            status, body, ctype, extra = await self._respond(head)
            await self._send(writer, status, body, ctype, extra,
                             head_only=head.startswith(b"HEAD "))
        except Exception:
            log.exception("status page request failed")
        finally:
            writer.close()

    async def _respond(self, head: bytes) -> tuple[int, bytes, str, list[tuple[str, str]]]:
        try:
            text = head.decode("latin-1")
            request_line, *header_lines = text.split("\r\n")
            method, target, version = request_line.split(" ")
        except ValueError:
            return 400, b"bad request\n", "text/plain", []
        if not version.startswith("HTTP/1."):
            return 400, b"bad request\n", "text/plain", []
        headers: dict[str, str] = {}
        for line in header_lines:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                return 400, b"bad request\n", "text/plain", []
            headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return 405, b"read-only page\n", "text/plain", [("Allow", "GET, HEAD")]
        if headers.get("host", "").lower() not in (f"{LOCALHOST}:{self.port}",
                                                   f"localhost:{self.port}"):
            return 421, b"use http://127.0.0.1:%d/\n" % self.port, "text/plain", []
        path = target.split("?", 1)[0]
        if path not in ("/", "/status.json"):
            return 404, b"not found\n", "text/plain", []
        try:
            stored = load_password(self.data_dir)
        except PasswordError as exc:
            return 503, render_message("Status page", str(exc)), "text/html; charset=utf-8", []
        if stored is None:
            return 503, render_message(
                "Status page not set up",
                "No password is set. On this machine run: fleetroom-agent set-password "
                f"--data-dir {self.data_dir}"), "text/html; charset=utf-8", []
        denied = await self._authenticate(headers.get("authorization"), stored)
        if denied is not None:
            return denied
        facts = await asyncio.to_thread(self.status)
        if path == "/status.json":
            return 200, json.dumps(facts, indent=1, default=str).encode(), \
                "application/json", []
        return 200, render_page(facts), "text/html; charset=utf-8", []

    async def _authenticate(self, header: str | None, stored: PasswordHash,
                            ) -> tuple[int, bytes, str, list[tuple[str, str]]] | None:
        """``None`` when the password is right, else the response to send."""
        now = self.monotonic()
        locked = self.throttle.locked(now)
        if locked > 0:
            return 429, b"too many failed logins; try again later\n", "text/plain", [
                ("Retry-After", str(int(locked) + 1))]
        if not header or not header.lower().startswith("basic "):
            return 401, b"password required\n", "text/plain", [("WWW-Authenticate", REALM)]
        mac = hmac.new(self._cache_key, header.encode("latin-1", "replace"),
                       hashlib.sha256).digest()
        if self._verified.get(mac, 0.0) > now:
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            _, _, password = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        ok = bool(password) and await asyncio.to_thread(stored.verify, password)
        if not ok:
            self.throttle.failed(self.monotonic())
            log.warning("status page: wrong password")
            await asyncio.sleep(FAILURE_PAUSE_S)
            return 401, b"wrong password\n", "text/plain", [("WWW-Authenticate", REALM)]
        self.throttle.succeeded()
        self._verified = {k: v for k, v in self._verified.items() if v > now}
        self._verified[mac] = now + AUTH_CACHE_S
        return None

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                    extra: list[tuple[str, str]] | None = None, *,
                    head_only: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
                 f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
                 "Connection: close", *(f"{k}: {v}" for k, v in SECURITY_HEADERS),
                 *(f"{k}: {v}" for k, v in extra or [])]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

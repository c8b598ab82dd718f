"""MQTT transport: envelopes up on the agent's own topic, replies and pushes down on its own.

The agent keeps one connection to the broker (MQTT 5, or 3.1.1 where a broker
needs it) over TLS — ``mqtts://host:8883`` — or over a WebSocket with TLS —
``wss://host/mqtt`` on port 443, which passes proxies and firewalls that let
only HTTPS out.  Like every transport it is outbound only: the broker never
connects to the agent, the agent subscribes.

* :meth:`MqttTransport.exchange` publishes a sealed envelope to the up topic
  (QoS 1) and waits for the server's reply on the down topic, matched by the
  reply's ``reply_to`` (the request's counter).  No reply in time, a lost
  connection or a refused login raise :class:`TransportError`; the sender then
  re-sends what was not acknowledged in a *new* envelope, and the server's item
  keys make the repeat harmless.
* The subscription stays open between requests, so a command the server pushes
  (envelope kind ``command``) reaches :attr:`MqttTransport.on_push` at once.  A
  reply that arrives after its request gave up goes there too: its
  acknowledgements are still valid once verified.

The transport routes envelopes by their header only; verifying signatures,
addresses and counters is the sender's job (:mod:`fleetroom_agent.sender`).
The broker lets this agent publish only to its own up topic and read only its
own down topic (per-agent account and ACL, made by the server at enrollment).

MQTT 5 only: the bridge marks a reply with the server's status and
``Retry-After`` as user properties, so "busy" (429/503) is seen at once instead
of as a timeout; with 3.1.1 a busy server's silence ends in a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiomqtt
from fleetroom_protocol.envelope import MAX_ENVELOPE_BYTES, EnvelopeError, split
from fleetroom_protocol.messages import MqttSettings
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetroom_agent.backoff import Backoff
from fleetroom_agent.transports.base import ErrorCode, TransportError
from fleetroom_agent.transports.tls import build_ssl_context

log = logging.getLogger(__name__)

MqttProtocol = Literal["5", "3.1.1"]
PushHandler = Callable[[bytes], Awaitable[object] | None]
"""Gets every envelope from the down topic that answers no waiting request."""

_DEFAULT_PORTS: Final = {"mqtts": 8883, "wss": 443}
SESSION_EXPIRY_S: Final = 3600
"""MQTT 5: the broker keeps our subscription and queued messages this long after a
connection drops, so a reply or push published during a short outage is delivered
after reconnecting.  A fresh start of the agent begins with a clean session."""
BUSY_STATUSES: Final = frozenset({429, 503})


def _refused(granted: object) -> bool:
    """True when a SUBACK refused the subscription (reason code ≥ 0x80)."""
    for code in granted if isinstance(granted, list | tuple) else []:
        value = code if isinstance(code, int) else getattr(code, "value", 0)
        if value >= 0x80:
            return True
    return False


def _classify(exc: BaseException) -> tuple[ErrorCode, str]:
    """``(code, words)`` for a connection failure an operator can act on."""
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc is not None:
        rc = exc.rc
        value = rc if isinstance(rc, int) else getattr(rc, "value", -1)
        if value in (4, 5, 0x86, 0x87, 0x8C):
            return "config", (f"the broker refused the agent's credentials ({text}); "
                              "re-enroll the agent to get new ones")
    if "pin mismatch" in lower:
        return "pin", text
    if "certificate" in lower or "ssl" in lower or "tls" in lower:
        return "tls", (f"TLS handshake with the broker failed ({text}); pass the broker's "
                       "CA if it uses a private one")
    if "timed out" in lower:
        return "timeout", text
    return "network", text or exc.__class__.__name__


class MqttTransport:
    """One agent's connection to the broker (see the module docstring).

    ``on_push`` may be set after construction (the sender that handles pushes is
    usually built with this transport in its list): ``transport.on_push =
    sender.accept_push``.
    """

    name = "mqtt"

    def __init__(self, settings: MqttSettings, *, ca_file: str | Path | None = None,
                 pins: tuple[str, ...] = (), protocol: MqttProtocol = "5",
                 on_push: PushHandler | None = None, reply_timeout_s: float = 60.0,
                 connect_timeout_s: float = 20.0, keepalive_s: int = 60,
                 max_reply_bytes: int = MAX_ENVELOPE_BYTES,
                 backoff: Backoff | None = None) -> None:
        parts = urlsplit(settings.url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            msg = (f"MQTT URL {settings.url!r} must be mqtts://host[:8883] or "
                   "wss://host[:443]/path (TLS is required)")
            raise ValueError(msg)
        self.settings = settings
        self.on_push = on_push
        self.protocol: MqttProtocol = protocol
        self.reply_timeout_s = reply_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.max_reply_bytes = max_reply_bytes
        self._host = parts.hostname
        self._port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self._websocket = parts.scheme == "wss"
        self._path = parts.path or "/mqtt"
        self._where = f"MQTT {parts.scheme}://{self._host}:{self._port}"
        self._tls: ssl.SSLContext = build_ssl_context(ca_file=ca_file, pins=pins)
        self._backoff = backoff or Backoff(base_s=1.0, cap_s=60.0)
        self._client: aiomqtt.Client | None = None
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._changed: asyncio.Condition | None = None
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._push_tasks: set[asyncio.Task[Any]] = set()
        self._attempts = 0
        self._sessions = 0
        self._last_error: tuple[ErrorCode, str] | None = None
        self._closed = False

    @classmethod
    def from_identity(cls, identity: Any, **kwargs: Any) -> MqttTransport:
        """The transport for an enrolled agent (``identity.mqtt`` must be set).

        The broker's CA defaults to the identity's CA file; pins are not carried
        over, because the broker usually has another key than the HTTPS server.
        """
        if identity.mqtt is None:
            msg = "this agent was enrolled without MQTT credentials"
            raise ValueError(msg)
        kwargs.setdefault("ca_file", identity.ca_file)
        return cls(identity.mqtt, **kwargs)

    # ------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        """Whether the connection and the down-topic subscription are up."""
        return self._client is not None

    @property
    def connections(self) -> int:
        """Successful connections so far (more than one: it reconnected)."""
        return self._sessions

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed (``None`` after a success)."""
        return None if self._last_error is None else self._last_error[1]

    # ---------------------------------------------------------------- transport

    async def start(self) -> None:
        """Connect in the background (also done by the first :meth:`exchange`), so
        pushed commands arrive before the first request."""
        if self._closed:
            raise TransportError(f"{self._where}: transport is closed", code="config")
        if self._task is None or self._task.done():
            self._changed = asyncio.Condition()
            self._kick = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="fleetroom-mqtt")

    async def exchange(self, envelope: bytes) -> bytes:
        """Publish ``envelope`` and return the server's reply to it (see module doc)."""
        try:
            ctr = split(envelope, max_bytes=MAX_ENVELOPE_BYTES).header.ctr
        except EnvelopeError as exc:
            raise TransportError(f"not an envelope: {exc}", code="protocol") from None
        await self.start()
        client = await self._wait_connected()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[ctr] = future
        try:
            try:
                await client.publish(self.settings.topic_up, envelope, qos=1,
                                     timeout=self.connect_timeout_s)
            except aiomqtt.MqttError as exc:
                raise TransportError(f"{self._where}: publishing failed: {exc}",
                                     code="network") from None
            try:
                return await asyncio.wait_for(future, self.reply_timeout_s)
            except TimeoutError:
                raise TransportError(f"{self._where}: no reply within "
                                     f"{self.reply_timeout_s:.0f} s", code="timeout") from None
        finally:
            self._waiting.pop(ctr, None)

    async def aclose(self) -> None:
        """Disconnect and stop; waiting exchanges fail."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_waiting(TransportError(f"{self._where}: transport closed", code="network"))
        for push in list(self._push_tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await push

    # --------------------------------------------------------------- connection

    def _new_client(self) -> aiomqtt.Client:
        resume = self._sessions > 0
        kwargs: dict[str, Any] = {}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, properties=props,
                          clean_start=not resume)
        else:
            kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=not resume)
        return aiomqtt.Client(
            self._host, self._port, username=self.settings.username,
            password=self.settings.password, identifier=self.settings.username,
            transport="websockets" if self._websocket else "tcp",
            websocket_path=self._path if self._websocket else None,
            tls_context=self._tls, keepalive=self.keepalive_s,
            timeout=self.connect_timeout_s, **kwargs)

    async def _run(self) -> None:
        """Stay connected and subscribed; reconnect with back-off (cut short by a request)."""
        assert self._kick is not None
        failures = 0
        while not self._closed:
            self._kick.clear()
            client = self._new_client()
            try:
                async with client:
                    granted = await client.subscribe(self.settings.topic_down, qos=1)
                    if _refused(granted):
                        raise aiomqtt.MqttCodeError(0x87, "the broker refused the "
                                                    "subscription to the agent's down topic")
                    self._sessions += 1
                    failures = 0
                    await self._set_state(client, None)
                    log.info("%s: connected as %s", self._where, self.settings.username)
                    async for message in client.messages:
                        self._dispatch(message)
                    raise aiomqtt.MqttError("the broker closed the connection")
            except asyncio.CancelledError:
                await self._set_state(None, None)
                raise
            except Exception as exc:  # any failure: report, back off, reconnect
                code, words = _classify(exc)
                await self._set_state(None, (code, f"{self._where}: {words}"))
                log.warning("%s: %s", self._where, words)
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._backoff.delay(failures))

    async def _set_state(self, client: aiomqtt.Client | None,
                         error: tuple[ErrorCode, str] | None) -> None:
        self._client = client
        if client is None:
            self._attempts += 1
            self._last_error = error
            self._fail_waiting(TransportError(
                error[1] if error else f"{self._where}: connection lost",
                code=error[0] if error else "network"))
        else:
            self._last_error = None
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _wait_connected(self) -> aiomqtt.Client:
        """The connected client; else trigger an attempt now and wait for its outcome."""
        if self._client is not None:
            return self._client
        assert self._changed is not None
        assert self._kick is not None
        attempts = self._attempts
        self._kick.set()
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: self._client is not None or self._attempts > attempts),
                    self.connect_timeout_s)
        except TimeoutError:
            raise TransportError(f"{self._where}: not connected after "
                                 f"{self.connect_timeout_s:.0f} s", code="timeout") from None
        if self._client is not None:
            return self._client
        code, words = self._last_error or ("network", f"{self._where}: not connected")
        raise TransportError(words, code=code)

    def _fail_waiting(self, error: TransportError) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)

    # ----------------------------------------------------------------- messages

    def _dispatch(self, message: aiomqtt.Message) -> None:
        """Hand a down-topic message to its waiting request, or to ``on_push``."""
        payload = message.payload if isinstance(message.payload, bytes) else b""
        status, retry_after, reply_to = _properties(message.properties)
        if not payload:
            # MQTT 5: the server answered without a signed reply (busy, refused).
            future = self._waiting.get(reply_to) if reply_to is not None else None
            if future is not None and not future.done():
                code: ErrorCode = "busy" if status in BUSY_STATUSES else "protocol"
                future.set_exception(TransportError(
                    f"{self._where}: the server answered {status}", retry_after,
                    code=code, status=status))
            return
        try:
            header = split(payload, max_bytes=self.max_reply_bytes).header
        except EnvelopeError as exc:
            log.warning("%s: ignoring a message on the down topic: %s", self._where, exc)
            return
        future = self._waiting.get(header.reply_to) if (
            header.kind == "reply" and header.reply_to is not None) else None
        if future is not None and not future.done():
            if status is not None and status != 200:
                code = "busy" if status in BUSY_STATUSES else "protocol"
                future.set_exception(TransportError(
                    f"{self._where}: the server answered {status}", retry_after,
                    code=code, status=status, reply=payload))
            else:
                future.set_result(payload)
            return
        if header.kind in ("command", "reply"):
            self._push(payload)

    def _push(self, payload: bytes) -> None:
        handler = self.on_push
        if handler is None:
            log.info("%s: a pushed envelope arrived but nothing handles pushes", self._where)
            return

        async def deliver() -> None:
            try:
                result = handler(payload)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning("%s: a pushed envelope was not accepted: %s", self._where, exc)

        task = asyncio.create_task(deliver())
        self._push_tasks.add(task)
        task.add_done_callback(self._push_tasks.discard)


def _properties(props: Properties | None) -> tuple[int | None, float | None, int | None]:
    """``(status, retry_after, reply_to)`` from the bridge's MQTT 5 user properties."""
    values: dict[str, str] = {}
    for pair in getattr(props, "UserProperty", None) or []:
        if isinstance(pair, tuple) and len(pair) == 2:
            values[str(pair[0])] = str(pair[1])

    def number(key: str, kind: type[int] | type[float]) -> Any:
        try:
            return kind(values[key]) if key in values else None
        except ValueError:
            return None

    return number("status", int), number("retry-after", float), number("reply-to", int)

"""SNMPv1/v2c without the pysnmp engine: pysnmp's message models over our own socket.

Why this exists:

* pysnmp's engine path for community SNMP registers every target in its LCD tables
  (SNMP-TARGET-MIB and SNMP-COMMUNITY-MIB rows) and, for every message received,
  searches those tables for the community (``_com2sec``) — so the cost per answer
  grows with the number of devices the agent has talked to (roughly quadratic over
  a fleet), on top of a one-off cost per new target.
* None of that machinery does anything for v1/v2c: a request is one BER message
  carrying the community in clear text, matched to its answer by request-id.

So for v1/v2c the client builds and parses messages with pysnmp's protocol API
(``pysnmp.proto.api``, pyasn1 underneath — the library still does all of the BER)
and sends them from one socket per address family of its own.  SNMPv3 keeps the
full engine (USM, engine-ID discovery, crypto), where the library earns its keep.

Measured (CPU per device for a full v2c read by ``Reader.read``, 1,000 simulated
devices from ``bench/``, 2 cores, same fleet, back to back): pysnmp's engine with one
walk per table 66 ms; this channel with one walk per table 41-44 ms; this channel
with all tables in one GETBULK stream (:meth:`PysnmpClient.walk_many`) 21-23 ms.
net-snmp's ``snmpget`` + ``snmpbulkwalk`` doing the same reads: 86 ms.  The goal
is 2x the CLI; the two changes together give ~3.5x.

Why pysnmp's message API and not a BER codec of our own: pyasn1 decoding is now
~80 % of the client's CPU, and a hand-written decoder for the SNMP subset would be
several times faster (a throw-away prototype measured ~6.6 ms per device); but the
project's rule is to use a well-kept library wherever one exists, and with the goal
met by a wide margin there is no case for owning a codec.  If the goal ever moves,
a codec can replace :func:`encode_request` and :func:`decode_response` alone: the
transport and everything above it take our :class:`Response` only.

An answer is accepted only if it is well-formed BER, a Response PDU, of the version
and community we sent, for an outstanding request-id, and from the address the
request went to.  Anything else is dropped as if it were lost — a misbehaving
device can cost us a timeout, never a crash or a wrong value — and counted, so the
timeout can say that the device did answer, just not usably.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api
from pysnmp.proto.api.verdec import decode_message_version

from .pysnmp_values import to_result
from .types import Result

__all__ = [
    "BadMessage",
    "CommunityChannel",
    "PduKind",
    "RequestFailed",
    "Response",
    "decode_response",
    "encode_request",
]

_log = logging.getLogger(__name__)

Oid = tuple[int, ...]
VarBinds = list[tuple[Oid, Result]]
PduKind = Literal["get", "next", "bulk"]

MAX_DATAGRAM: Final = 65535
RECEIVE_BUFFER: Final = 4 * 1024 * 1024
"""Asked for (Linux caps it at net.core.rmem_max): answers to a few hundred requests
in flight must fit while the event loop is busy decoding."""
DRAIN_BATCH: Final = 256
"""Datagrams read per wake-up at most, so a device flooding us cannot starve the
event loop (the socket stays readable and is drained again on the next pass)."""

_V1: Final[Any] = api.PROTOCOL_MODULES[api.SNMP_VERSION_1]
_V2C: Final[Any] = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
_MODULES: Final[dict[int, Any]] = {0: _V1, 1: _V2C}
_MESSAGE_SPECS: Final[dict[int, Any]] = {0: _V1.Message(), 1: _V2C.Message()}
"""Decoding templates, built once (pyasn1 clones them; pysnmp's engine does the same)."""
_RESPONSE_NAMES: Final = frozenset({"get-response", "response"})
_MAX_REQUEST_ID: Final = 0x7FFFFFFF


class BadMessage(ValueError):
    """A datagram that is not a usable SNMPv1/v2c answer; the message says why."""


class RequestFailed(Exception):
    """A request got no usable answer: ``kind`` is ``timeout`` or ``error``."""

    def __init__(self, kind: Literal["timeout", "error"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    """One decoded Response PDU, values already converted to ours."""

    version: int
    """The message's version field: 0 for SNMPv1, 1 for SNMPv2c."""
    community: bytes
    request_id: int
    status: int
    index: int
    var_binds: VarBinds


# ---------------------------------------------------------------------- messages


def encode_request(version: int, community: bytes, request_id: int, kind: PduKind,
                   oids: Sequence[Oid], max_repetitions: int = 0) -> bytes:
    """One GetRequest, GetNextRequest or GetBulkRequest (v2c only) as BER.

    Only these three read PDUs can be built here: the client is read-only by
    construction (``tests/test_snmp_readonly.py`` checks the source and the wire)."""
    mod = _MODULES[version]
    if kind == "bulk":
        if version == 0:
            raise ValueError("SNMPv1 has no GetBulkRequest")
        pdu = _V2C.GetBulkRequestPDU()
        pdu_api = _V2C.apiBulkPDU
        pdu_api.set_defaults(pdu)
        pdu_api.set_non_repeaters(pdu, 0)
        pdu_api.set_max_repetitions(pdu, max_repetitions)
    else:
        pdu = mod.GetRequestPDU() if kind == "get" else mod.GetNextRequestPDU()
        pdu_api = mod.apiPDU
        pdu_api.set_defaults(pdu)
    pdu_api.set_request_id(pdu, request_id)
    pdu_api.set_varbinds(pdu, [(mod.ObjectIdentifier(o), mod.Null("")) for o in oids])
    msg = mod.Message()
    mod.apiMessage.set_defaults(msg)
    mod.apiMessage.set_community(msg, community)
    mod.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


def decode_response(data: bytes) -> Response:
    """Parse an SNMPv1/v2c Response; :class:`BadMessage` for anything else."""
    try:
        version = int(decode_message_version(data))
    except (PyAsn1Error, ValueError, TypeError, IndexError):
        raise BadMessage("not an SNMP message (malformed or truncated BER)") from None
    mod = _MODULES.get(version)
    if mod is None:
        raise BadMessage(f"not SNMPv1/v2c (version field {version})")
    try:
        msg, rest = decoder.decode(data, asn1Spec=_MESSAGE_SPECS[version])
        if rest:
            raise BadMessage(f"{len(rest)} bytes after the message")
        name = msg["data"].getName()
        if name not in _RESPONSE_NAMES:
            raise BadMessage(f"a {name} PDU, not a Response")
        pdu = mod.apiMessage.get_pdu(msg)
        return Response(
            version=version,
            community=bytes(mod.apiMessage.get_community(msg)),
            request_id=int(mod.apiPDU.get_request_id(pdu)),
            status=int(mod.apiPDU.get_error_status(pdu)),
            index=int(pdu.getComponentByPosition(2)),
            var_binds=[(name_.asTuple(), to_result(value))
                       for name_, value in mod.apiPDU.get_varbinds(pdu)],
        )
    except BadMessage:
        raise
    except (PyAsn1Error, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RecursionError, OverflowError):
        raise BadMessage("malformed or truncated BER") from None


# ---------------------------------------------------------------------- transport


class _Pending:
    """One outstanding request: what it must match, and its retry timer."""

    __slots__ = ("addr", "community", "dropped", "future", "packet", "sock", "sockaddr",
                 "timeout", "timer", "tries", "tries_left", "version", "why_dropped")

    def __init__(self, future: asyncio.Future[Response], sock: socket.socket,
                 sockaddr: tuple[Any, ...], version: int, community: bytes, packet: bytes,
                 timeout: float, retries: int) -> None:
        self.future = future
        self.sock = sock
        self.sockaddr = sockaddr
        self.addr = (sockaddr[0], sockaddr[1])
        self.version = version
        self.community = community
        self.packet = packet
        self.timeout = timeout
        self.tries = retries + 1
        self.tries_left = retries
        self.timer: asyncio.TimerHandle | None = None
        self.dropped = 0
        self.why_dropped = ""


class CommunityChannel:
    """UDP sockets (one per address family, opened on first use) shared by every
    v1/v2c request of one event loop.

    Each socket is drained (up to :data:`DRAIN_BATCH` datagrams) whenever it becomes
    readable: asyncio's datagram transport reads one datagram per loop pass, and a
    burst of answers would overflow the kernel buffer meanwhile (the sweep learned
    this at 1,000 devices)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._socks: dict[int, socket.socket] = {}
        self._pending: dict[int, _Pending] = {}
        self._by_addr: dict[tuple[Any, Any], int] = {}
        self._next_id = random.randint(1, _MAX_REQUEST_ID)  # not a secret: S311 is off
        self.dropped = 0
        """Datagrams received and thrown away (malformed, stray, mismatched)."""

    async def request(self, family: int, sockaddr: tuple[Any, ...], version: int,
                      community: bytes, kind: PduKind, oids: Sequence[Oid],
                      max_repetitions: int, timeout: float, retries: int) -> Response:
        """Send one request (resent ``retries`` times after ``timeout`` each) and
        return its answer; :class:`RequestFailed` if none usable came."""
        sock = self._socket(family)
        request_id = self._new_id()
        packet = encode_request(version, community, request_id, kind, oids, max_repetitions)
        future: asyncio.Future[Response] = self._loop.create_future()
        p = _Pending(future, sock, sockaddr, version, community, packet, timeout, retries)
        self._pending[request_id] = p
        self._by_addr[p.addr] = self._by_addr.get(p.addr, 0) + 1
        try:
            self._send(p, first=True)
            p.timer = self._loop.call_later(timeout, self._expired, request_id)
            return await future
        finally:
            if p.timer is not None:
                p.timer.cancel()
            del self._pending[request_id]
            left = self._by_addr[p.addr] - 1
            if left:
                self._by_addr[p.addr] = left
            else:
                del self._by_addr[p.addr]

    def close(self) -> None:
        """Fail what is still waiting and release the sockets."""
        for p in list(self._pending.values()):
            if not p.future.done():
                p.future.set_exception(RequestFailed("error", "SNMP client closed"))
        for sock in self._socks.values():
            if not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()

    # ------------------------------------------------------------------ internals

    def _socket(self, family: int) -> socket.socket:
        sock = self._socks.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
                sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))  # noqa: S104
                self._loop.add_reader(sock.fileno(), self._drain, sock)
            except OSError as exc:
                sock.close()
                raise RequestFailed("error", f"no local UDP socket ({exc.strerror})") from None
            self._socks[family] = sock
        return sock

    def _new_id(self) -> int:
        while True:
            rid = self._next_id
            self._next_id = rid + 1 if rid < _MAX_REQUEST_ID else 1
            if rid not in self._pending:
                return rid

    def _send(self, p: _Pending, *, first: bool = False) -> None:
        try:
            p.sock.sendto(p.packet, p.sockaddr)
        except (BlockingIOError, InterruptedError):
            return  # send buffer full: as good as lost, the retry resends
        except OSError as exc:
            if first:
                raise RequestFailed("error", f"could not send ({exc.strerror})") from None

    def _expired(self, request_id: int) -> None:
        p = self._pending.get(request_id)
        if p is None or p.future.done():
            return
        if p.tries_left > 0:
            p.tries_left -= 1
            self._send(p)
            p.timer = self._loop.call_later(p.timeout, self._expired, request_id)
            return
        tries = f"{p.tries} {'try' if p.tries == 1 else 'tries'}"
        detail = f"no response within {p.timeout:g} s ({tries})"
        if p.dropped:
            detail = (f"no usable response within {p.timeout:g} s ({tries}); "
                      f"{p.dropped} unusable datagram{'s' if p.dropped > 1 else ''} "
                      f"from the device dropped: {p.why_dropped}")
        p.future.set_exception(RequestFailed("timeout", detail))

    def _drain(self, sock: socket.socket) -> None:
        errors = 0
        for _ in range(DRAIN_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors can surface here on some platforms
                errors += 1
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                     errno.ENETUNREACH) or errors > 64:
                    return
                continue
            self._received(data, addr)

    def _received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        source = (addr[0], addr[1])
        try:
            rsp = decode_response(data)
        except BadMessage as exc:
            self._drop(source, str(exc))
            return
        except Exception as exc:  # a decoder bug must not stop the reader: drop, go on
            _log.warning("undecodable SNMP answer from %s: %s", source[0], type(exc).__name__)
            self._drop(source, "undecodable")
            return
        p = self._pending.get(rsp.request_id)
        if p is None or p.addr != source:
            self._drop(source, "an answer to no request of ours (wrong request-id)")
            return
        if rsp.version != p.version or rsp.community != p.community:
            self._drop(source, "an answer with another SNMP version or community")
            return
        if not p.future.done():
            p.future.set_result(rsp)

    def _drop(self, source: tuple[Any, Any], why: str) -> None:
        self.dropped += 1
        if source not in self._by_addr:
            return
        for p in self._pending.values():
            if p.addr == source:
                p.dropped += 1
                p.why_dropped = why

"""Test support for the SNMP client: a misbehaving agent and a wire tap.

* :class:`BadAgent` is a small SNMPv1/v2c responder on loopback, written with
  pysnmp's protocol API and pyasn1 only (no pysnmp engine, so its mistakes are
  our own and deliberate).  By default it behaves like a correct agent over a
  dict of OIDs; :class:`Misbehaviour` switches on the faults real devices show:
  truncated or garbage datagrams, wrong request-ids, answers with another
  community or version or from another port, huge values, OIDs that do not
  increase, walks that never end, var-binds left out, v1 noSuchName, error
  statuses (also tooBig, genErr and empty answers to GETBULK), silence after N
  answers.
* :class:`UdpTap` is a loopback UDP relay between the client and an agent that
  keeps every datagram, so tests can decode what the client really sent.
* :func:`pdu_kind` names the PDU of a datagram (v1, v2c, and v3 when the scoped
  PDU is not encrypted).

The test modules load this file by path (pytest runs with
``--import-mode=importlib``, which does not put the test directory on sys.path).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api, rfc1902, rfc1905
from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message

Oid = tuple[int, ...]

V1 = api.PROTOCOL_MODULES[api.SNMP_VERSION_1]
V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]


def oid(text: str) -> Oid:
    """``"1.3.6"`` -> ``(1, 3, 6)``."""
    return tuple(int(x) for x in text.strip(".").split("."))


@dataclass
class Misbehaviour:
    """What the agent gets wrong.  Everything off = a correct agent."""

    silent: bool = False
    """Never answer (a host with the port open but no agent)."""
    answer_first: int | None = None
    """Answer this many requests, then go silent (a device that dies mid-walk)."""
    delay: float = 0.0
    """Seconds before each answer."""
    truncate: bool = False
    """Send only the first half of each response datagram."""
    garbage: bool = False
    """Send bytes that are not BER at all."""
    wrong_request_id: bool = False
    """Answer with request-id + 1."""
    echo_request: bool = False
    """Answer with the request PDU itself (a GetRequest coming *to* the manager)."""
    omit: set[Oid] = field(default_factory=set)
    """GET: leave these var-binds out of the response (v2c 'answers only some')."""
    error_status: tuple[int, int] | None = None
    """GET with more than one var-bind: answer this (error-status, error-index)."""
    too_big_over: int | None = None
    """GET with more var-binds than this: answer tooBig."""
    loop_back_at: Oid | None = None
    """GETNEXT/GETBULK: when the next OID would be this one, return the first OID of
    the data again (the walk goes backwards: not increasing)."""
    endless_under: Oid | None = None
    """GETNEXT/GETBULK at or under this subtree: always a larger OID inside it, so the
    walk never ends by itself."""
    bulk_too_big_over: int | None = None
    """GETBULK asking for more repetitions than this: answer tooBig."""
    error_under: Oid | None = None
    """GETNEXT/GETBULK whose first var-bind is at or under this subtree: genErr."""
    empty_under: Oid | None = None
    """GETBULK whose var-bind is at or under this subtree: a Response without var-binds."""
    wrong_community: bool = False
    """Answer with another community than the request's."""
    wrong_version: bool = False
    """Answer a v2c request with a v1 message and the reverse (same PDU)."""
    answer_from_other_port: bool = False
    """Send answers from a second socket (another source port): a spoofed answer."""


@dataclass
class Seen:
    """One request as the agent decoded it."""

    version: int
    pdu: str
    oids: list[Oid]
    max_repetitions: int | None = None


class BadAgent(asyncio.DatagramProtocol):
    """An SNMPv1/v2c agent on ``127.0.0.1`` serving ``data`` with ``faults``.

    Use as ``async with BadAgent(data) as agent:``; ``agent.port`` is where it
    listens and ``agent.seen`` what it received."""

    def __init__(self, data: dict[Oid, Any], *, community: str = "public",
                 faults: Misbehaviour | None = None, host: str = "127.0.0.1") -> None:
        self.data = dict(sorted(data.items()))
        self.order = list(self.data)
        self.community = community
        self.faults = faults or Misbehaviour()
        self.host = host
        self.seen: list[Seen] = []
        self.answered = 0
        # requests received but not yet answered (with ``delay``): the client's
        # real concurrency as the device sees it
        self.outstanding = 0
        self.max_outstanding = 0
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._other: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> BadAgent:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                           local_addr=(self.host, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        if self.faults.answer_from_other_port:
            self._other, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(self.host, 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in (self._transport, self._other):
            if t is not None:
                t.close()

    # ------------------------------------------------------------------ protocol

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            version = int(api.decodeMessageVersion(data))
            p = api.PROTOCOL_MODULES[version]
            msg, _ = decoder.decode(data, asn1Spec=p.Message())
        except (PyAsn1Error, KeyError, ValueError):
            return
        if str(p.apiMessage.get_community(msg)) != self.community:
            return  # like a real agent: unknown community, no answer
        pdu = p.apiMessage.get_pdu(msg)
        kind = msg["data"].getName()
        oids = [tuple(o) for o, _ in p.apiPDU.get_varbinds(pdu)]
        reps = None
        if kind == "get-bulk-request":
            reps = int(V2C.apiBulkPDU.get_max_repetitions(pdu))
        self.seen.append(Seen(version, kind, oids, reps))
        f = self.faults
        if f.silent or (f.answer_first is not None and self.answered >= f.answer_first):
            return
        self.answered += 1
        wire = self._respond(p, version, msg, pdu, kind, oids, reps)
        if wire is None:
            return
        if f.delay:
            self.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            asyncio.get_running_loop().call_later(f.delay, self._send_later, wire, addr)
        else:
            self._send(wire, addr)

    def _send_later(self, wire: bytes, addr: Any) -> None:
        self.outstanding -= 1
        self._send(wire, addr)

    def _send(self, wire: bytes, addr: Any) -> None:
        transport = self._other if self.faults.answer_from_other_port else self._transport
        if transport is not None and not transport.is_closing():
            transport.sendto(wire, addr)

    def _respond(self, p: Any, version: int, msg: Any, pdu: Any, kind: str,
                 oids: list[Oid], reps: int | None) -> bytes | None:
        f = self.faults
        if f.garbage:
            return b"\xde\xad\xbe\xef" * 8
        if f.echo_request:
            return encoder.encode(msg)
        rsp = p.apiMessage.get_response(msg)
        rpdu = p.apiMessage.get_pdu(rsp)
        status, index, var_binds = 0, 0, []
        first = oids[0] if oids else ()
        if kind == "get-bulk-request" and f.empty_under is not None and _at_or_under(
                first, f.empty_under):
            p.apiPDU.set_varbinds(rpdu, [])
            return self._finish(p, version, rsp, rpdu, pdu)
        if kind == "get-bulk-request" and f.bulk_too_big_over is not None and (
                reps or 0) > f.bulk_too_big_over:
            status, index, var_binds = 1, 0, []
        elif kind != "get-request" and f.error_under is not None and _at_or_under(
                first, f.error_under):
            status, index, var_binds = 5, 1, []
        elif kind == "get-request":
            status, index, var_binds = self._get(version, oids)
        elif kind == "get-next-request":
            status, index, var_binds = self._next(version, oids, 1)
        elif kind == "get-bulk-request":
            status, index, var_binds = self._next(version, oids, max(1, reps or 1))
        else:
            status, index, var_binds = 5, 0, [(o, rfc1902.Null("")) for o in oids]
        if status:
            var_binds = [(o, rfc1902.Null("")) for o in oids]  # errors echo the request
        p.apiPDU.set_error_status(rpdu, status)
        p.apiPDU.set_error_index(rpdu, index)
        p.apiPDU.set_varbinds(rpdu, [(rfc1902.ObjectName(o), v) for o, v in var_binds])
        return self._finish(p, version, rsp, rpdu, pdu)

    def _finish(self, p: Any, version: int, rsp: Any, rpdu: Any, pdu: Any) -> bytes:
        f = self.faults
        if f.wrong_request_id:
            p.apiPDU.set_request_id(rpdu, int(p.apiPDU.get_request_id(pdu)) + 1)
        if f.wrong_community:
            p.apiMessage.set_community(rsp, self.community + "-not")
        wire: bytes = encoder.encode(rsp)
        if f.wrong_version:
            # the version INTEGER follows the outer SEQUENCE header: 02 01 <0|1>
            start = 2 if wire[1] < 0x80 else 2 + (wire[1] & 0x7F)
            assert wire[start:start + 2] == b"\x02\x01"
            wire = wire[:start + 2] + bytes([1 - version]) + wire[start + 3:]
        if f.truncate:
            wire = wire[: len(wire) // 2]
        return wire

    def _get(self, version: int, oids: list[Oid]) -> tuple[int, int, list[tuple[Oid, Any]]]:
        f = self.faults
        if f.too_big_over is not None and len(oids) > f.too_big_over:
            return 1, 0, []
        if f.error_status is not None and len(oids) > 1:
            return f.error_status[0], f.error_status[1], []
        out: list[tuple[Oid, Any]] = []
        for i, o in enumerate(oids, start=1):
            if o in self.data:
                if o not in f.omit:
                    out.append((o, self.data[o]))
            elif version == 0:
                return 2, i, []  # SNMPv1: noSuchName names the first missing var-bind
            elif any(k[: len(o) - 1] == o[:-1] for k in self.order):
                out.append((o, rfc1905.noSuchInstance))
            else:
                out.append((o, rfc1905.noSuchObject))
        return 0, 0, out

    def _next_oid(self, o: Oid) -> Oid | None:
        f = self.faults
        if f.endless_under is not None:
            root = f.endless_under
            if o[: len(root)] == root and len(o) > len(root):
                return (*root, o[len(root)] + 1)
            if o <= root:
                return (*root, 1)
        for k in self.order:
            if k > o:
                if f.loop_back_at is not None and k == f.loop_back_at:
                    return self.order[0]
                return k
        return None

    def _value(self, o: Oid) -> Any:
        if o in self.data:
            return self.data[o]
        return rfc1902.Integer32(o[-1] % 2**31)  # endless walk rows

    def _next(self, version: int, oids: list[Oid],
              repetitions: int) -> tuple[int, int, list[tuple[Oid, Any]]]:
        out: list[tuple[Oid, Any]] = []
        cursors = list(oids)
        for _ in range(repetitions):
            for i, o in enumerate(cursors):
                nxt = self._next_oid(o)
                if nxt is None:
                    if version == 0:
                        return 2, i + 1, []
                    out.append((o, rfc1905.endOfMibView))
                    continue
                out.append((nxt, self._value(nxt)))
                cursors[i] = nxt
            if out and all(isinstance(v, type(rfc1905.endOfMibView))
                           for _, v in out[-len(cursors):]):
                break
        return 0, 0, out


def _at_or_under(o: Oid, root: Oid) -> bool:
    return o[: len(root)] == root


class UdpTap(asyncio.DatagramProtocol):
    """A loopback relay: clients talk to ``tap.port``, the tap forwards to
    ``upstream`` and relays answers back.  ``sent`` holds every datagram a client
    sent, ``received`` every answer, in order."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self.port = 0
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None
        self._client: Any = None

    async def __aenter__(self) -> UdpTap:
        loop = asyncio.get_running_loop()
        tap = self

        class _Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                tap.received.append(data)
                if tap._front is not None and tap._client is not None:
                    tap._front.sendto(data, tap._client)

        self._front, _ = await loop.create_datagram_endpoint(lambda: self,
                                                             local_addr=("127.0.0.1", 0))
        self._back, _ = await loop.create_datagram_endpoint(_Back, remote_addr=self.upstream)
        self.port = self._front.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in (self._front, self._back):
            if t is not None:
                t.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)
        self._client = addr
        if self._back is not None:
            self._back.sendto(data)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.sent.clear()
        self.received.clear()


def pdu_kind(datagram: bytes) -> str:
    """The PDU type of an SNMP datagram: ``get-request``, ``get-next-request``,
    ``get-bulk-request``, ``set-request``, ``response``, ``report``…

    v3 messages whose scoped PDU is encrypted give ``encrypted``; anything that does
    not decode gives ``undecodable``."""
    try:
        version = int(api.decodeMessageVersion(datagram))
        if version in api.PROTOCOL_MODULES:
            msg, _ = decoder.decode(datagram, asn1Spec=api.PROTOCOL_MODULES[version].Message())
            return str(msg["data"].getName())
        msg, _ = decoder.decode(datagram, asn1Spec=SNMPv3Message())
        scoped = msg["msgData"]
        if scoped.getName() != "plaintext":
            return "encrypted"
        return str(scoped["plaintext"]["data"].getName())
    except (PyAsn1Error, KeyError, ValueError):
        return "undecodable"


def v3_flags(datagram: bytes) -> int:
    """msgFlags of a v3 datagram (1 = auth, 2 = priv, 4 = reportable)."""
    msg, _ = decoder.decode(datagram, asn1Spec=SNMPv3Message())
    return int(msg["msgGlobalData"]["msgFlags"].asOctets()[0])


def silent_udp_socket(host: str = "127.0.0.1") -> socket.socket:
    """A bound UDP socket nobody reads: datagrams to it vanish without an ICMP error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def closed_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing listens on (a datagram to it draws ICMP port unreachable)."""
    with silent_udp_socket(host) as s:
        return int(s.getsockname()[1])

"""The pysnmp 7 back-end of :class:`~.client.SnmpClient`.

Design decisions, and why:

* **One engine per event loop.**  pysnmp keeps the USM user table, the per-target
  configuration and the *engine-ID cache* (keyed by transport address, kept 300 s)
  inside one ``SnmpEngine``; sharing it means a v3 device is discovered once, not
  on every request, and all requests share one UDP socket per address family.
  An engine is bound to the loop that first used it, so each loop gets its own.
* **Raw command generators, no MIB layer.**  Configuration goes through the
  hlapi objects of ``pysnmp.hlapi.v3arch.asyncio`` (``CommunityData``,
  ``UsmUserData``, transport targets and its LCD configurator), but PDUs are sent
  with the RFC 3413 command generators and raw ``(ObjectName, Null)`` var-binds.
  The hlapi ``get_cmd`` wraps every var-bind in ``ObjectType(ObjectIdentity(...))``
  and resolves it against the MIB tree even with ``lookupMib=False``; skipping that
  cut client CPU for a 5-OID GET from 2.6 ms to 1.5 ms (measured on loopback
  against snmpsim).  Only numeric OIDs are used anywhere.
* **Read-only by construction.**  This module only ever names the GET, GETNEXT and
  GETBULK generators; ``tests/test_snmp_readonly.py`` checks the source and decodes
  every packet the client sends.
* **Honest partial results.**  A device that answers part of a GET or walk and
  then stops gives back what it answered (with :attr:`Absent.NO_RESPONSE` or
  ``WalkResult.stopped``); only a device that never answered raises
  :class:`SnmpError`.  Error messages name the target and
  :meth:`Credential.describe`, never a community or key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pyasn1.error import PyAsn1Error
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import auth as usm
from pysnmp.hlapi.v3arch.asyncio.auth import CommunityData, UsmUserData
from pysnmp.hlapi.v3arch.asyncio.lcd import CommandGeneratorLcdConfigurator
from pysnmp.hlapi.v3arch.asyncio.transport import Udp6TransportTarget, UdpTransportTarget
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.error import StatusInformation

from .types import (
    Absent,
    AuthProto,
    Credential,
    PrivProto,
    Result,
    SnmpError,
    SnmpValue,
    Target,
    Timing,
    ValueType,
    WalkResult,
)

__all__ = [
    "AUTH_PROTOCOLS",
    "MAX_GET_VARBINDS",
    "PRIV_PROTOCOLS",
    "PysnmpClient",
    "default_max_in_flight",
    "parse_oid",
    "to_result",
]

_log = logging.getLogger(__name__)

MAX_GET_VARBINDS: Final = 20
"""Var-binds per GET PDU.  Printers answer 20 comfortably inside one 1500-byte
frame for typical values, and older firmware answers tooBig or nothing at all
for very long PDUs; longer OID lists are split."""

AUTH_PROTOCOLS: Final[dict[AuthProto, tuple[int, ...]]] = {
    "none": usm.USM_AUTH_NONE,
    "MD5": usm.USM_AUTH_HMAC96_MD5,
    "SHA": usm.USM_AUTH_HMAC96_SHA,
    "SHA224": usm.USM_AUTH_HMAC128_SHA224,
    "SHA256": usm.USM_AUTH_HMAC192_SHA256,
    "SHA384": usm.USM_AUTH_HMAC256_SHA384,
    "SHA512": usm.USM_AUTH_HMAC384_SHA512,
}

PRIV_PROTOCOLS: Final[dict[PrivProto, tuple[int, ...]]] = {
    "none": usm.USM_PRIV_NONE,
    "DES": usm.USM_PRIV_CBC56_DES,
    "3DES": usm.USM_PRIV_CBC168_3DES,
    "AES": usm.USM_PRIV_CFB128_AES,
    "AES128": usm.USM_PRIV_CFB128_AES,
    # pysnmp's *unqualified* AES192/AES256 constants are the Reeder ("Cisco") key
    # extension and the *_BLUMENTHAL ones the draft-blumenthal extension; our names
    # follow net-snmp (AES-256 = Blumenthal, AES-256-C = Reeder).  snmpsim's
    # --v3-priv-proto follows pysnmp: its AES256 is Reeder, AES256BLMT Blumenthal.
    # The two differ only when the auth hash is shorter than the AES key
    # (MD5/SHA-1 with AES-192/256, SHA-224 with AES-256).
    "AES192": usm.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "AES256": usm.USM_PRIV_CFB256_AES_BLUMENTHAL,
    "AES192C": usm.USM_PRIV_CFB192_AES,
    "AES256C": usm.USM_PRIV_CFB256_AES,
}

# error-status values (RFC 3416) the GET/walk logic reacts to
_TOO_BIG: Final = 1
_NO_SUCH_NAME: Final = 2

_END_OF_MIB_TAG: Final = rfc1905.EndOfMibView.tagSet
_ABSENT_BY_TAG: Final = {
    rfc1905.NoSuchObject.tagSet: Absent.NO_SUCH_OBJECT,
    rfc1905.NoSuchInstance.tagSet: Absent.NO_SUCH_INSTANCE,
    rfc1905.EndOfMibView.tagSet: Absent.END_OF_MIB,
}
_INT_TYPES: Final = {
    rfc1902.Integer32.tagSet: ValueType.INTEGER,  # same tag as INTEGER
    rfc1902.Counter32.tagSet: ValueType.COUNTER32,
    rfc1902.Gauge32.tagSet: ValueType.GAUGE32,  # same tag as Unsigned32
    rfc1902.TimeTicks.tagSet: ValueType.TIMETICKS,
    rfc1902.Counter64.tagSet: ValueType.COUNTER64,
}
_OCTET_TYPES: Final = {
    rfc1902.OctetString.tagSet: ValueType.OCTETS,  # also BITS
    rfc1902.Opaque.tagSet: ValueType.OPAQUE,
}
_OID_TAG: Final = rfc1902.ObjectIdentifier.tagSet
_IPADDRESS_TAG: Final = rfc1902.IpAddress.tagSet
_NULL_TAG: Final = rfc1902.Null.tagSet

_AUTH_FAILURES: Final = {
    "unknownUserName": "the device does not know this SNMPv3 user",
    "wrongDigest": "authentication failed at the device (wrong auth key or protocol)",
    "decryptionError": "the device could not decrypt the request "
                       "(wrong privacy key or protocol)",
    "notInTimeWindow": "the device kept rejecting our engine boots/time (not in time window)",
    "unsupportedSecurityLevel": "the device does not accept this security level for the user",
    "authenticationFailure": "the response failed authentication (wrong auth key or protocol)",
    "authenticationError": "the response could not be authenticated",
    "unknownSecurityName": "the SNMPv3 user could not be set up locally",
    "unsupportedAuthProtocol": "the auth protocol is not available locally",
    "unsupportedPrivProtocol": "the privacy protocol is not available locally",
    "noEncryption": "no local encryption support (is 'cryptography' installed?)",
    "encryptionError": "local encryption failed",
    "noAuthentication": "no local authentication support",
}
_CONTEXT_REPORTS: Final = {
    "1.3.6.1.6.3.12.1.4.0": "the device cannot serve this context (snmpUnavailableContexts)",
    "1.3.6.1.6.3.12.1.5.0": "the device does not know this context (snmpUnknownContexts)",
}
_PROTOCOL_FAILURES: Final = frozenset({
    "parseError", "serializationError", "deserializationError", "invalidMsg",
    "emptyResponse", "badResponse", "dataMismatch", "engineIDMismatch", "unknownEngineID",
    "unsupportedMsgProcessingModel", "unknownPDUHandler", "unsupportedPDUtype",
    "loopTerminated", "oidNotIncreasing", "reportPduReceived",
})

_LCD: Final = CommandGeneratorLcdConfigurator()


def default_max_in_flight(cpus: int | None = None) -> int:
    """How many operations one event loop should carry at once.

    pysnmp spends ~4.7 ms of CPU per PDU (more with v3), so one core manages ~200
    PDUs/s; past that the loop answers its own timers late and times out requests
    the devices did answer (8-12 % at 200 in flight on one core).  32 per core,
    capped at 64 because one event loop never uses more than one core anyway.
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
    return max(8, min(64, 32 * max(1, cpus)))


def parse_oid(text: str) -> tuple[int, ...]:
    """A dotted numeric OID (one leading dot allowed) as a tuple of sub-identifiers.

    Raises :class:`ValueError` for anything else: names are never resolved (no MIB
    lookup, by design), so a typo must fail loudly instead of asking the device for
    something else."""
    parts = text[1:].split(".") if text.startswith(".") else text.split(".")
    if len(parts) < 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"not a numeric OID: {text!r}")
    oid = tuple(int(p) for p in parts)
    if oid[0] > 2 or any(sub > 0xFFFFFFFF for sub in oid):
        raise ValueError(f"not a valid OID: {text!r}")
    return oid


def _dotted(oid: tuple[int, ...]) -> str:
    return ".".join(map(str, oid))


def to_result(value: Any) -> Result:
    """One received pysnmp value as :class:`SnmpValue`, or why there is none.

    Types are told apart by their BER tag, not ``isinstance``: ``IpAddress`` and
    ``Opaque`` are subclasses of ``OctetString`` and the counters of ``Integer``, so
    class checks would depend on their order."""
    tag = value.tagSet
    kind = _INT_TYPES.get(tag)
    if kind is not None:
        return SnmpValue(kind, int(value))
    kind = _OCTET_TYPES.get(tag)
    if kind is not None:
        return SnmpValue(kind, value.asOctets())
    if tag == _OID_TAG:
        return SnmpValue(ValueType.OID, _dotted(value.asTuple()))
    if tag == _IPADDRESS_TAG:
        return SnmpValue(ValueType.IPADDRESS, ".".join(str(b) for b in value.asOctets()))
    if tag == _NULL_TAG:
        return SnmpValue(ValueType.NULL, b"")
    absent = _ABSENT_BY_TAG.get(tag)
    if absent is not None:
        return absent
    return Absent.ERROR  # a type SNMP does not define: never pass it on as data


def _null() -> Any:
    return rfc1902.Null("")


def _var_binds(oids: Sequence[tuple[int, ...]]) -> list[tuple[Any, Any]]:
    return [(rfc1902.ObjectName(o), _null()) for o in oids]


class _Udp4Target(UdpTransportTarget):  # type: ignore[misc]
    """A UDP/IPv4 target whose address is already numeric.

    The stock ``create()`` runs ``getaddrinfo`` in the default thread pool for every
    target; ours are IP literals resolved with ``AI_NUMERICHOST`` (no DNS, no
    thread), so the resolved socket address is passed through."""

    async def _resolve_address(self, transportAddr: tuple[Any, ...]) -> tuple[Any, ...]:
        return transportAddr


class _Udp6Target(Udp6TransportTarget):  # type: ignore[misc]
    """IPv6 twin of :class:`_Udp4Target`."""

    async def _resolve_address(self, transportAddr: tuple[Any, ...]) -> tuple[Any, ...]:
        return transportAddr


@dataclass(slots=True)
class _Session:
    """Everything one operation needs, built once per get/walk."""

    target: Target
    credential: Credential
    timing: Timing
    auth: Any  # CommunityData | UsmUserData
    transport: Any  # _Udp4Target | _Udp6Target
    context: bytes
    user_key: tuple[str, bytes] | None
    answered: bool = False
    """Set once any PDU of this operation got a response: from then on a failure
    yields a partial result instead of an exception."""

    def error(self, kind: Literal["timeout", "auth", "protocol", "deadline", "error"],
              what: str) -> SnmpError:
        return SnmpError(kind, f"{what} ({self.target}, {self.credential.describe()})")


class _UserGate:
    """Keeps two different secrets for one SNMPv3 user name from being in use at once.

    pysnmp's USM table holds one row per user *name*; the hlapi configurator
    replaces that row (and drops every key localised from it) when the same name
    arrives with other keys or protocols.  Devices that share a user name such as
    ``admin`` but not its passwords would then corrupt each other's requests in
    flight.  Operations with the same secrets run concurrently; a different set of
    secrets for the same name waits until they are done (FIFO, so neither starves).
    """

    def __init__(self) -> None:
        self._holders: dict[str, tuple[bytes, int]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    @asynccontextmanager
    async def hold(self, key: tuple[str, bytes] | None) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        user, fingerprint = key
        while True:
            held = self._holders.get(user)
            if held is None or (held[0] == fingerprint and not self._waiters.get(user)):
                self._holders[user] = (fingerprint, (held[1] if held else 0) + 1)
                break
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(user, []).append(waiter)
            try:
                await waiter
            finally:
                queue = self._waiters.get(user, [])
                if waiter in queue:
                    queue.remove(waiter)
                if not queue:
                    self._waiters.pop(user, None)
        try:
            yield
        finally:
            fp, count = self._holders[user]
            if count > 1:
                self._holders[user] = (fp, count - 1)
            else:
                del self._holders[user]
                for waiter in self._waiters.pop(user, []):
                    if not waiter.done():
                        waiter.set_result(None)


@dataclass(eq=False)
class _LoopState:
    """The engine, generators and limits that belong to one event loop."""

    loop: asyncio.AbstractEventLoop
    max_in_flight: int
    engine: Any = field(default_factory=SnmpEngine)
    get_gen: Any = field(default_factory=cmdgen.GetCommandGenerator)
    next_gen: Any = field(default_factory=cmdgen.NextCommandGeneratorSingleRun)
    bulk_gen: Any = field(default_factory=cmdgen.BulkCommandGeneratorSingleRun)
    users: _UserGate = field(default_factory=_UserGate)
    transports: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    pending: set[asyncio.Future[Any]] = field(default_factory=set)
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_in_flight)

    def close(self) -> None:
        """Fail what is still waiting and release the sockets."""
        for fut in list(self.pending):
            if not fut.done():
                with suppress(RuntimeError):  # its loop is already closed: nobody waits
                    fut.set_exception(SnmpError("error", "SNMP client closed"))
        self.pending.clear()
        try:
            self.engine.close_dispatcher()
        except (RuntimeError, PySnmpError) as exc:  # loop already closed
            _log.debug("closing SNMP engine: %s", type(exc).__name__)


class PysnmpClient:
    """:class:`~.client.SnmpClient` on pysnmp 7 (see the module docstring).

    ``max_in_flight`` bounds concurrent operations (GETs and walks) per event
    loop, default :func:`default_max_in_flight`.  The deadline of an operation
    starts once it has a slot.  Use one client for the whole agent and call
    :meth:`close` at the end; it may be used again afterwards (a fresh engine is
    made).
    """

    def __init__(self, *, max_in_flight: int | None = None) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._max_in_flight = max_in_flight or default_max_in_flight()
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    @property
    def max_in_flight(self) -> int:
        """The concurrency bound per event loop."""
        return self._max_in_flight

    async def __aenter__(self) -> PysnmpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ public API

    async def get(self, target: Target, credential: Credential, oids: Sequence[str],
                  timing: Timing | None = None) -> dict[str, Result]:
        """GET every OID (see :meth:`SnmpClient.get`).

        Keys of the result are the caller's strings.  OIDs go out in PDUs of at
        most :data:`MAX_GET_VARBINDS`; an error-status for one var-bind (v1
        noSuchName, genErr…) marks that OID :attr:`Absent.ERROR` and re-asks for the
        rest, tooBig splits the PDU.  If the device stops answering after some PDUs
        were answered, the unanswered OIDs are :attr:`Absent.NO_RESPONSE`."""
        timing = _checked(timing)
        parsed = {text: parse_oid(text) for text in oids}
        unique = list(dict.fromkeys(parsed.values()))
        if not unique:
            return {}
        state = self._state()
        session = await self._session(state, target, credential, timing)
        values: dict[tuple[int, ...], Result] = {}
        async with state.slots:
            try:
                async with asyncio.timeout(timing.deadline):
                    async with state.users.hold(session.user_key):
                        for start in range(0, len(unique), MAX_GET_VARBINDS):
                            await self._get_pdus(state, session,
                                                 unique[start:start + MAX_GET_VARBINDS], values)
            except TimeoutError:
                if not session.answered:
                    raise session.error(
                        "deadline", f"no answer within the {timing.deadline:g} s deadline",
                    ) from None
                _log.debug("%s: GET cut short by the deadline", target)
            except SnmpError as exc:
                if not session.answered:
                    raise
                _log.debug("%s: GET cut short: %s", target, exc)
        return {text: values.get(oid, Absent.NO_RESPONSE) for text, oid in parsed.items()}

    async def walk(self, target: Target, credential: Credential, root: str,
                   timing: Timing | None = None) -> WalkResult:
        """All rows under ``root`` (see :meth:`SnmpClient.walk`).

        Row OIDs are dotted strings without a leading dot.  ``stopped`` is also
        ``"error"`` when the device answered with an error-status or stopped making
        sense part-way (the rows before are kept)."""
        timing = _checked(timing)
        root_oid = parse_oid(root)
        state = self._state()
        session = await self._session(state, target, credential, timing)
        result = WalkResult()
        async with state.slots:
            try:
                async with asyncio.timeout(timing.deadline):
                    async with state.users.hold(session.user_key):
                        await self._walk(state, session, root_oid, result)
            except TimeoutError:
                if not session.answered:
                    raise session.error(
                        "deadline", f"no answer within the {timing.deadline:g} s deadline",
                    ) from None
                result.stopped = "deadline"
        return result

    async def close(self) -> None:
        """Release sockets and engines of every loop this client was used on."""
        states, self._states = list(self._states.values()), {}
        for state in states:
            state.close()

    # ------------------------------------------------------------------ internals

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for old in [lp for lp in self._states if lp.is_closed()]:
                self._states.pop(old).close()
            state = self._states[loop] = _LoopState(loop, self._max_in_flight)
        return state

    async def _session(self, state: _LoopState, target: Target, credential: Credential,
                       timing: Timing) -> _Session:
        auth, user_key = _auth_data(target, credential)
        family, sockaddr = _sockaddr(target, credential)
        key = (family, sockaddr, timing.timeout, timing.retries)
        transport = state.transports.get(key)
        if transport is None:
            cls = _Udp6Target if family == socket.AF_INET6 else _Udp4Target
            transport = await cls.create(sockaddr, timeout=timing.timeout, retries=timing.retries)
            state.transports[key] = transport
        context = credential.context.encode() if credential.version == "3" else b""
        return _Session(target, credential, timing, auth, transport, context, user_key)

    async def _request(self, state: _LoopState, s: _Session,
                       pdu: Literal["get", "next", "bulk"],
                       oids: Sequence[tuple[int, ...]],
                       max_repetitions: int = 0) -> tuple[int, int, list[tuple[Any, Any]]]:
        """Send one PDU (pysnmp handles retries and v3 discovery) and wait for the
        answer: ``(error_status, error_index, var_binds)``, or :class:`SnmpError`."""
        fut: asyncio.Future[tuple[Any, int, int, list[tuple[Any, Any]]]] = (
            state.loop.create_future())

        def on_response(_engine: Any, _handle: Any, error_indication: Any, error_status: Any,
                        error_index: Any, var_binds: Any, _ctx: Any) -> None:
            if not fut.done():
                fut.set_result((error_indication, int(error_status or 0),
                                int(error_index or 0), list(var_binds or ())))

        engine = state.engine
        try:
            addr_name, _ = _LCD.configure(engine, s.auth, s.transport, s.context)
            vbs = _var_binds(oids)
            if pdu == "get":
                state.get_gen.send_varbinds(engine, addr_name, None, s.context, vbs, on_response)
            elif pdu == "next":
                state.next_gen.send_varbinds(engine, addr_name, None, s.context, vbs, on_response)
            else:
                state.bulk_gen.send_varbinds(engine, addr_name, None, s.context, 0,
                                             max_repetitions, vbs, on_response)
        except StatusInformation as exc:
            raise _indication_error(s, exc.get("errorIndication")) from None
        except (PySnmpError, PyAsn1Error) as exc:
            raise s.error("error", f"could not send the request: {type(exc).__name__}") from None
        state.pending.add(fut)
        try:
            error_indication, status, index, var_binds = await fut
        finally:
            state.pending.discard(fut)
        if error_indication:
            raise _indication_error(s, error_indication)
        s.answered = True
        return status, index, var_binds

    async def _get_pdus(self, state: _LoopState, s: _Session, oids: list[tuple[int, ...]],
                        values: dict[tuple[int, ...], Result]) -> None:
        """GET ``oids`` (one PDU unless the device forces a split) into ``values``.

        Each round settles at least one OID or makes the PDUs smaller, so a broken
        agent cannot keep us in this loop."""
        todo: list[list[tuple[int, ...]]] = [oids]
        while todo:
            part = todo.pop(0)
            status, index, var_binds = await self._request(state, s, "get", part)
            if status == 0:
                wanted = set(part)
                got = 0
                for name, value in var_binds:
                    oid = name.asTuple()
                    if oid in wanted and oid not in values:
                        values[oid] = to_result(value)
                        got += 1
                missing = [o for o in part if o not in values]
                if missing and got:
                    todo.insert(0, missing)  # the agent left some out: ask for those again
                else:
                    for oid in missing:
                        values[oid] = Absent.ERROR
                continue
            if status == _TOO_BIG:
                if len(part) == 1:
                    values[part[0]] = Absent.ERROR
                else:
                    half = len(part) // 2
                    todo[:0] = [part[:half], part[half:]]
                continue
            # noSuchName (v1), genErr, …: the index names the culprit; without a
            # usable index fall back to one OID per PDU.
            if 1 <= index <= len(part):
                values[part[index - 1]] = Absent.ERROR
                rest = part[:index - 1] + part[index:]
                if rest:
                    todo.insert(0, rest)
            elif len(part) == 1:
                values[part[0]] = Absent.ERROR
            else:
                todo[:0] = [[o] for o in part]

    async def _walk(self, state: _LoopState, s: _Session, root: tuple[int, ...],
                    result: WalkResult) -> None:
        """GETBULK (v2c/v3) or GETNEXT (v1) from ``root`` until the subtree ends.

        Rows are appended to ``result`` as they arrive so a deadline keeps them."""
        timing = s.timing
        bulk = s.credential.version != "1"
        repetitions = timing.max_repetitions
        depth = len(root)
        cursor = root
        while True:
            ask = max(1, min(repetitions, timing.max_walk_rows - len(result.rows) + 1))
            try:
                if bulk:
                    status, _, var_binds = await self._request(state, s, "bulk", [cursor], ask)
                else:
                    status, _, var_binds = await self._request(state, s, "next", [cursor])
            except SnmpError as exc:
                if not s.answered:
                    raise
                _log.debug("%s: walk of %s cut short: %s", s.target, _dotted(root), exc)
                result.stopped = "timeout" if exc.kind == "timeout" else "error"
                return
            if status:
                if status == _NO_SUCH_NAME and not bulk:
                    return  # SNMPv1's way of saying endOfMibView
                if status == _TOO_BIG and bulk and repetitions > 1:
                    repetitions = max(1, repetitions // 2)
                    continue
                _log.debug("%s: walk of %s: error-status %d", s.target, _dotted(root), status)
                result.stopped = "error"
                return
            if not var_binds:
                result.stopped = "error"  # an empty answer to a GETNEXT/GETBULK
                return
            for name, value in var_binds:
                if value.tagSet == _END_OF_MIB_TAG:
                    return
                oid = name.asTuple()
                if oid <= cursor:
                    _log.debug("%s: walk of %s: %s does not follow %s", s.target,
                               _dotted(root), _dotted(oid), _dotted(cursor))
                    result.stopped = "not-increasing"
                    return
                if len(oid) <= depth or oid[:depth] != root:
                    return  # left the subtree
                cursor = oid
                converted = to_result(value)
                if isinstance(converted, Absent):
                    continue  # noSuchObject in a walk is not a row
                if len(result.rows) >= timing.max_walk_rows:
                    result.stopped = "max-rows"
                    return
                result.rows.append((_dotted(oid), converted))


def _checked(timing: Timing | None) -> Timing:
    timing = timing or Timing()
    if (timing.timeout <= 0 or timing.retries < 0 or timing.deadline <= 0
            or timing.max_repetitions < 1 or timing.max_walk_rows < 1):
        raise ValueError(f"unusable timing: {timing}")
    return timing


def _sockaddr(target: Target, credential: Credential) -> tuple[int, tuple[Any, ...]]:
    """``(family, socket address)`` for a numeric target, without DNS."""
    try:
        infos = socket.getaddrinfo(target.address, target.port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError, OverflowError):
        raise SnmpError("error", f"not an IP address and UDP port: {target} "
                                 f"({credential.describe()})") from None
    family, _, _, _, sockaddr = infos[0]
    if not 0 < target.port < 65536:
        raise SnmpError("error", f"bad UDP port: {target} ({credential.describe()})")
    return family, tuple(sockaddr)


def _auth_data(target: Target, credential: Credential) -> tuple[Any, tuple[str, bytes] | None]:
    """The pysnmp security parameters for ``credential`` and its user-gate key."""
    def bad(what: str) -> SnmpError:
        return SnmpError("auth", f"{what} ({target}, {credential.describe()})")

    if credential.version in ("1", "2c"):
        return CommunityData(credential.community,
                             mpModel=0 if credential.version == "1" else 1), None
    if credential.version != "3":
        raise bad(f"unknown SNMP version {credential.version!r}")
    if not credential.user:
        raise bad("SNMPv3 needs a user name")
    auth_proto = AUTH_PROTOCOLS.get(credential.auth_proto)
    priv_proto = PRIV_PROTOCOLS.get(credential.priv_proto)
    if auth_proto is None or priv_proto is None:
        raise bad("unknown auth or privacy protocol")
    has_auth = credential.auth_proto != "none"
    has_priv = credential.priv_proto != "none"
    if has_priv and not has_auth:
        raise bad("SNMPv3 privacy needs authentication")
    if has_auth and not credential.auth_key:
        raise bad("auth protocol set but no auth key")
    if has_priv and not credential.priv_key:
        raise bad("privacy protocol set but no privacy key")
    data = UsmUserData(
        credential.user,
        authKey=credential.auth_key if has_auth else None,
        privKey=credential.priv_key if has_priv else None,
        authProtocol=auth_proto,
        privProtocol=priv_proto,
    )
    digest = hashlib.sha256()
    for part in (credential.auth_proto, credential.auth_key or "",
                 credential.priv_proto, credential.priv_key or ""):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return data, (credential.user, digest.digest())


def _indication_error(s: _Session, indication: Any) -> SnmpError:
    """Map a pysnmp error-indication to an :class:`SnmpError` kind and a message
    that names the problem but no secret."""
    name = type(indication).__name__
    name = name[:1].lower() + name[1:] if name != "str" else str(indication)
    if name == "requestTimedOut":
        t = s.timing
        tries = t.retries + 1
        return s.error("timeout", f"no response within {t.timeout:g} s "
                                  f"({tries} {'try' if tries == 1 else 'tries'})")
    if name in _AUTH_FAILURES:
        return s.error("auth", _AUTH_FAILURES[name])
    if name == "reportPduReceived":
        report = str(indication)
        if report in _CONTEXT_REPORTS:
            return s.error("auth", f"{_CONTEXT_REPORTS[report]}, context "
                                   f"{s.credential.context!r}")
        return s.error("protocol", f"the device sent an error report ({report})")
    if name in _PROTOCOL_FAILURES:
        return s.error("protocol", f"unusable response ({name})")
    return s.error("error", f"request failed ({name})")

"""The pysnmp 7 back-end of :class:`~.client.SnmpClient`.

Design decisions, and why:

* **v1/v2c without the engine, v3 with it.**  Community SNMP goes through
  :mod:`.community`: pysnmp's protocol API builds and parses the messages (pyasn1
  does the BER) and our own socket carries them.  pysnmp's engine registers every
  target in its LCD tables and searches them on every answer, so on a fleet its
  cost per device grew with the fleet (see that module for the figures).  SNMPv3
  keeps the full engine: USM users, engine-ID discovery and caching, crypto.
* **One engine per event loop, made on first v3 use.**  pysnmp keeps the USM user
  table, the per-target configuration and the *engine-ID cache* (keyed by
  transport address, kept 300 s) inside one ``SnmpEngine``; sharing it means a v3
  device is discovered once, not on every request.  An engine is bound to the loop
  that first used it, so each loop gets its own; an agent reading only v1/v2c
  devices never builds one (~0.15 s of CPU saved).
* **Raw command generators, no MIB layer.**  v3 configuration goes through the
  hlapi objects of ``pysnmp.hlapi.v3arch.asyncio`` (``UsmUserData``, transport
  targets and its LCD configurator), but PDUs are sent with the RFC 3413 command
  generators and raw ``(ObjectName, Null)`` var-binds: the hlapi ``get_cmd``
  resolves every var-bind against the MIB tree even with ``lookupMib=False``.
  Only numeric OIDs are used anywhere.
* **Few PDUs per device.**  :meth:`PysnmpClient.walk_many` walks all of a
  device's subtrees in one GETBULK stream (one cursor, jumping over what lies
  between the subtrees): a full read of a demo-fleet printer is ~9 PDUs and ~170
  var-binds, against ~16 PDUs and ~310 var-binds with one walk per table (each
  walk's last answer is mostly rows past its table).  SNMPv1 has no GETBULK and
  walks the subtrees side by side instead, one GETNEXT var-bind per unfinished
  subtree.
* **Read-only by construction.**  This module and :mod:`.community` only ever
  build GET, GETNEXT and GETBULK PDUs; ``tests/test_snmp_readonly.py`` checks the
  source and decodes every packet the client sends.
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
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pyasn1.error import PyAsn1Error
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import auth as usm
from pysnmp.hlapi.v3arch.asyncio.auth import UsmUserData
from pysnmp.hlapi.v3arch.asyncio.lcd import CommandGeneratorLcdConfigurator
from pysnmp.hlapi.v3arch.asyncio.transport import Udp6TransportTarget, UdpTransportTarget
from pysnmp.proto import rfc1902
from pysnmp.proto.error import StatusInformation

from .community import CommunityChannel, PduKind, RequestFailed
from .pysnmp_values import dotted, to_result
from .types import (
    Absent,
    AuthProto,
    Credential,
    PrivProto,
    Result,
    SnmpError,
    Target,
    Timing,
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

Oid = tuple[int, ...]
VarBinds = list[tuple[Oid, Result]]
ErrorKind = Literal["timeout", "auth", "protocol", "deadline", "error"]

MAX_GET_VARBINDS: Final = 20
"""Var-binds per GET (and v1 GETNEXT) PDU.  Printers answer 20 comfortably inside
one 1500-byte frame for typical values, and older firmware answers tooBig or
nothing at all for very long PDUs; longer OID lists are split."""

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

    A saturated event loop answers its own timers late and times out requests the
    devices did answer (8-12 % at 200 in flight on one core with the pysnmp engine).
    32 per core, capped at 64 because one event loop never uses more than one core
    anyway.
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


def _under(oid: Oid, root: Oid) -> bool:
    """True when ``oid`` lies strictly inside the subtree ``root``."""
    return len(oid) > len(root) and oid[:len(root)] == root


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
    family: int
    sockaddr: tuple[Any, ...]
    community: bytes = b""
    """v1/v2c: the community as sent (Latin-1, as pysnmp encodes it)."""
    auth: Any = None  # v3: UsmUserData
    transport: Any = None  # v3: _Udp4Target | _Udp6Target
    context: bytes = b""
    user_key: tuple[str, bytes] | None = None
    answered: bool = False
    """Set once any PDU of this operation got a response: from then on a failure
    yields a partial result instead of an exception."""

    def error(self, kind: ErrorKind, what: str) -> SnmpError:
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
    """The channel, engine, generators and limits that belong to one event loop."""

    loop: asyncio.AbstractEventLoop
    max_in_flight: int
    community: CommunityChannel = field(init=False)
    engine: Any = None
    """The pysnmp engine, made on the first SNMPv3 request."""
    get_gen: Any = field(default_factory=cmdgen.GetCommandGenerator)
    next_gen: Any = field(default_factory=cmdgen.NextCommandGeneratorSingleRun)
    bulk_gen: Any = field(default_factory=cmdgen.BulkCommandGeneratorSingleRun)
    users: _UserGate = field(default_factory=_UserGate)
    transports: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    pending: set[asyncio.Future[Any]] = field(default_factory=set)
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_in_flight)
        self.community = CommunityChannel(self.loop)

    def v3_engine(self) -> Any:
        """The engine of this loop (built now if this is the first v3 request)."""
        if self.engine is None:
            self.engine = SnmpEngine()
        return self.engine

    def close(self) -> None:
        """Fail what is still waiting and release the sockets."""
        self.community.close()
        for fut in list(self.pending):
            if not fut.done():
                with suppress(RuntimeError):  # its loop is already closed: nobody waits
                    fut.set_exception(SnmpError("error", "SNMP client closed"))
        self.pending.clear()
        if self.engine is None:
            return
        try:
            self.engine.close_dispatcher()
        except (RuntimeError, PySnmpError) as exc:  # loop already closed
            _log.debug("closing SNMP engine: %s", type(exc).__name__)


@dataclass(slots=True)
class _RootWalk:
    """One subtree of a :meth:`PysnmpClient.walk_many`: its rows and how far it got."""

    root: Oid
    result: WalkResult = field(default_factory=WalkResult)
    reached: bool = False
    """Some answer covered this subtree (a row of it, or proof that it ended)."""
    done: bool = False

    def finish(self, stopped: str | None = None) -> None:
        self.done = self.reached = True
        self.result.stopped = stopped

    def add(self, oid: Oid, value: Result, max_rows: int) -> bool:
        """Keep one row; ``False`` (and finished, ``max-rows``) when it is one too many."""
        self.reached = True
        if isinstance(value, Absent):
            return True  # noSuchObject/noSuchInstance inside a walk is not a row
        if len(self.result.rows) >= max_rows:
            self.finish("max-rows")
            return False
        self.result.rows.append((dotted(oid), value))
        return True


class PysnmpClient:
    """:class:`~.client.SnmpClient` on pysnmp 7 (see the module docstring).

    ``max_in_flight`` bounds concurrent operations (GETs and walks) per event
    loop, default :func:`default_max_in_flight`.  The deadline of an operation
    starts once it has a slot.  Use one client for the whole agent and call
    :meth:`close` at the end; it may be used again afterwards (fresh sockets and
    engine are made).
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
        got = (await self.walk_many(target, credential, [root], timing))[root]
        if isinstance(got, SnmpError):  # pragma: no cover - a lone root is always reached
            raise got
        return got

    async def walk_many(self, target: Target, credential: Credential, roots: Sequence[str],
                        timing: Timing | None = None) -> dict[str, WalkResult | SnmpError]:
        """Every subtree of ``roots`` in one stream of PDUs (see
        :meth:`SnmpClient.walk_many`).

        v2c/v3: GETBULK from the first subtree with one var-bind (the cursor); each
        row is kept by the subtree it falls in, rows between subtrees are skipped, and
        when an answer ends between two subtrees the next request starts at the next
        one, so a gap costs at most one answer.  v1: GETNEXT with one var-bind per
        unfinished subtree.  Each subtree ends as :meth:`walk` ends (its own
        ``stopped``, its own ``max_walk_rows``); a subtree that is nested in another
        one is served from the outer one's rows."""
        timing = _checked(timing)
        parsed = {text: parse_oid(text) for text in roots}
        if not parsed:
            return {}
        covers = _covering_roots(parsed.values())
        state = self._state()
        session = await self._session(state, target, credential, timing)
        walks = {root: _RootWalk(root) for root in covers}
        failure: SnmpError | None = None
        async with state.slots:
            try:
                async with asyncio.timeout(timing.deadline):
                    async with state.users.hold(session.user_key):
                        if credential.version == "1":
                            await self._next_side_by_side(state, session, covers, walks)
                        else:
                            await self._bulk_stream(state, session, covers, walks)
            except TimeoutError:
                failure = session.error(
                    "deadline", f"no answer within the {timing.deadline:g} s deadline")
                if not session.answered:
                    raise failure from None
            except SnmpError as exc:
                if not session.answered:
                    raise
                failure = exc
        if failure is not None:
            _log.debug("%s: walk cut short: %s", target, failure)
            stopped = failure.kind if failure.kind in ("timeout", "deadline") else "error"
            for w in walks.values():
                if w.reached and not w.done:
                    w.finish(stopped)
        out: dict[str, WalkResult | SnmpError] = {}
        for text, oid in parsed.items():
            cover = walks[oid] if oid in walks else next(
                w for r, w in walks.items() if _under(oid, r))
            if not cover.reached:  # only when the device stopped answering first
                out[text] = failure or session.error("error", "subtree never reached")
            elif cover.root == oid:
                out[text] = cover.result
            else:
                prefix = dotted(oid) + "."
                out[text] = WalkResult([row for row in cover.result.rows
                                        if row[0].startswith(prefix)], cover.result.stopped)
        return out

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
        if credential.version in ("1", "2c"):
            family, sockaddr = _sockaddr(target, credential)
            try:
                community = credential.community.encode("latin-1")
            except UnicodeEncodeError:
                raise SnmpError("auth", "the community is not Latin-1 text "
                                        f"({target}, {credential.describe()})") from None
            return _Session(target, credential, timing, family, sockaddr, community)
        auth, user_key = _auth_data(target, credential)
        family, sockaddr = _sockaddr(target, credential)
        key = (family, sockaddr, timing.timeout, timing.retries)
        transport = state.transports.get(key)
        if transport is None:
            cls = _Udp6Target if family == socket.AF_INET6 else _Udp4Target
            transport = await cls.create(sockaddr, timeout=timing.timeout, retries=timing.retries)
            state.transports[key] = transport
        return _Session(target, credential, timing, family, sockaddr, auth=auth,
                        transport=transport, context=credential.context.encode(),
                        user_key=user_key)

    async def _request(self, state: _LoopState, s: _Session, pdu: PduKind,
                       oids: Sequence[Oid], max_repetitions: int = 0,
                       ) -> tuple[int, int, VarBinds]:
        """Send one PDU (with retries; v3 discovery by the engine) and wait for the
        answer: ``(error_status, error_index, var_binds)``, or :class:`SnmpError`."""
        if s.credential.version == "3":
            status, index, var_binds = await self._engine_request(
                state, s, pdu, oids, max_repetitions)
        else:
            try:
                rsp = await state.community.request(
                    s.family, s.sockaddr, 0 if s.credential.version == "1" else 1,
                    s.community, pdu, oids, max_repetitions, s.timing.timeout,
                    s.timing.retries)
            except RequestFailed as exc:
                raise s.error(exc.kind, str(exc)) from None
            status, index, var_binds = rsp.status, rsp.index, rsp.var_binds
        s.answered = True
        return status, index, var_binds

    async def _engine_request(self, state: _LoopState, s: _Session, pdu: PduKind,
                              oids: Sequence[Oid], max_repetitions: int,
                              ) -> tuple[int, int, VarBinds]:
        """One PDU through the pysnmp engine (SNMPv3)."""
        fut: asyncio.Future[tuple[Any, int, int, list[tuple[Any, Any]]]] = (
            state.loop.create_future())

        def on_response(_engine: Any, _handle: Any, error_indication: Any, error_status: Any,
                        error_index: Any, var_binds: Any, _ctx: Any) -> None:
            if not fut.done():
                fut.set_result((error_indication, int(error_status or 0),
                                int(error_index or 0), list(var_binds or ())))

        engine = state.v3_engine()
        try:
            addr_name, _ = _LCD.configure(engine, s.auth, s.transport, s.context)
            vbs = [(rfc1902.ObjectName(o), rfc1902.Null("")) for o in oids]
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
        return status, index, [(name.asTuple(), to_result(value)) for name, value in var_binds]

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
                for oid, value in var_binds:
                    if oid in wanted and oid not in values:
                        values[oid] = value
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

    async def _bulk_stream(self, state: _LoopState, s: _Session, roots: list[Oid],
                           walks: dict[Oid, _RootWalk]) -> None:
        """GETBULK from ``roots[0]`` to the end of ``roots[-1]`` (sorted, disjoint).

        Rows are kept as they arrive so a deadline keeps them.  Every request either
        moves the cursor forward, finishes a subtree, or halves the repetitions, so
        no answer sequence can keep this loop going (beyond ``max_walk_rows`` per
        subtree and the deadline)."""
        timing = s.timing
        repetitions = timing.max_repetitions
        i = 0
        cursor = roots[0]
        while i < len(roots):
            current = walks[roots[i]]
            ask = max(1, min(repetitions, timing.max_walk_rows - len(current.result.rows) + 1))
            status, _, var_binds = await self._request(state, s, "bulk", [cursor], ask)
            current.reached = True  # the cursor is never before roots[i]: answered for it
            if status or not var_binds:
                if status == _TOO_BIG and repetitions > 1:
                    repetitions = max(1, repetitions // 2)
                    continue
                # an error-status, or an empty answer to a GETBULK: this subtree is
                # broken at the device; the others may still be fine
                _log.debug("%s: walk of %s: error-status %d, %d var-binds", s.target,
                           dotted(current.root), status, len(var_binds))
                current.finish("error")
                i += 1
                if i < len(roots):
                    cursor = roots[i]
                continue
            jump = False
            for oid, value in var_binds:
                if value is Absent.END_OF_MIB:
                    for root in roots[i:]:  # nothing follows the cursor: all complete
                        walks[root].finish()
                    return
                if oid <= cursor:
                    _log.debug("%s: walk of %s: %s does not follow %s", s.target,
                               dotted(roots[i]), dotted(oid), dotted(cursor))
                    walks[roots[i]].finish("not-increasing")
                    i += 1
                    jump = True
                    break
                cursor = oid
                while i < len(roots) and oid > roots[i] and not _under(oid, roots[i]):
                    walks[roots[i]].finish()  # left this subtree
                    i += 1
                if i == len(roots):
                    return
                if _under(oid, roots[i]) and not walks[roots[i]].add(
                        oid, value, timing.max_walk_rows):
                    i += 1
                    jump = True
                    break
                # else: a row between two subtrees, not asked for
            if i < len(roots) and (jump or cursor < roots[i]):
                cursor = roots[i]

    async def _next_side_by_side(self, state: _LoopState, s: _Session, roots: list[Oid],
                                 walks: dict[Oid, _RootWalk]) -> None:
        """SNMPv1: GETNEXT with one var-bind per unfinished subtree, until each ends.

        v1 fails a whole PDU when one var-bind runs off the end of the MIB
        (noSuchName, with its index); that subtree is then complete and the others
        are asked again.  Without a usable error-index the subtrees go one per PDU."""
        timing = s.timing
        cursors: dict[Oid, Oid] = {root: root for root in roots}
        per_pdu = MAX_GET_VARBINDS
        while cursors:
            batch = list(cursors)[:per_pdu]
            status, index, var_binds = await self._request(
                state, s, "next", [cursors[root] for root in batch])
            for root in batch:
                walks[root].reached = True
            if status:
                if 1 <= index <= len(batch):
                    walks[batch[index - 1]].finish(
                        None if status == _NO_SUCH_NAME else "error")
                    del cursors[batch[index - 1]]
                elif status == _TOO_BIG and len(batch) > 1:
                    per_pdu = len(batch) // 2
                elif len(batch) > 1:
                    per_pdu = 1  # which var-bind failed? ask one at a time
                else:
                    walks[batch[0]].finish(None if status == _NO_SUCH_NAME else "error")
                    del cursors[batch[0]]
                continue
            if len(var_binds) != len(batch):
                _log.debug("%s: GETNEXT of %d var-binds answered with %d", s.target,
                           len(batch), len(var_binds))
                for root in batch:
                    walks[root].finish("error")
                    del cursors[root]
                continue
            for root, (oid, value) in zip(batch, var_binds, strict=True):
                cursor = cursors[root]
                if value is Absent.END_OF_MIB or (oid > cursor and not _under(oid, root)):
                    walks[root].finish()
                elif oid <= cursor:
                    walks[root].finish("not-increasing")
                elif walks[root].add(oid, value, timing.max_walk_rows):
                    cursors[root] = oid
                    continue
                del cursors[root]


def _covering_roots(roots: Iterable[Oid]) -> list[Oid]:
    """The distinct roots not nested in another one, sorted (SNMP order)."""
    ordered = sorted(set(roots))
    covers: list[Oid] = []
    for root in ordered:
        if covers and _under(root, covers[-1]):
            continue
        covers.append(root)
    return covers


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


def _auth_data(target: Target, credential: Credential) -> tuple[Any, tuple[str, bytes]]:
    """The pysnmp USM parameters for a v3 ``credential`` and its user-gate key."""
    def bad(what: str) -> SnmpError:
        return SnmpError("auth", f"{what} ({target}, {credential.describe()})")

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


"""Mail intake: agents' envelopes arriving by e-mail (``fleetroom mail-intake``).

Two ways in, one path through:

* a built-in SMTP receiver (aiosmtpd; STARTTLS when a certificate is configured,
  size limit enforced while the data is read), for installations that point an
  MX record or a relay at the server;
* IMAP polling of a mailbox over TLS, for installations whose mail stays with
  their provider.

Both call :meth:`MailIntake.handle` with the raw mail: size-capped MIME parsing,
decryption of the part with the server's X25519 key (and the agent's registered
key when known), bounded reassembly, then the envelope goes to
:func:`fleetroom.agents.receive.receive_envelope` — the same function the HTTPS
view and the MQTT bridge call — which verifies the agent's signature before it
parses anything and stores through the unique item keys.  Mail that cannot be
used is dropped with a log line and a counter, never with a crash; mail that
could not be handled *for now* (server busy, buffer full) is deferred (SMTP 451,
left unread in IMAP) so the mail system retries it and nothing is lost.

Mail arrives twice routinely (retries after a lost "250", IMAP re-polls): a
message already delivered is recognised by its id and skipped; past that memory,
the counter window and the item keys in ``receive_envelope`` make a repeat store
nothing new.

No reply is mailed back: acknowledgements reach agents over a two-way transport
(see docs/mail-transport.md for the resend rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import re
import signal
import ssl
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fleetroom_protocol.keys import decode_public_key
from fleetroom_protocol.mail import Limits, MailError, Reassembler, SenderKeys, extract_part
from fleetroom_protocol.mail import open_part as open_mail_part
from nacl.public import PrivateKey, PublicKey

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from fleetroom.config import Config, MailIntakeConfig

log = logging.getLogger("fleetroom.agents.mail_intake")

TRANSPORT = "mail"
TEMPORARY_STATUSES = frozenset({429, 503})
"""``receive_envelope`` statuses that mean "not now": the mail is retried later."""
IMAP_BATCH = 200
"""Mails handled per IMAP poll (the rest wait for the next poll)."""

Verdict = Literal["buffered", "delivered", "duplicate", "refused", "deferred"]


class Outcome(Protocol):
    """What :func:`fleetroom.agents.receive.receive_envelope` returns (the parts used here)."""

    @property
    def status(self) -> int: ...
    @property
    def agent_id(self) -> str | None: ...


Receive = Callable[..., Outcome]
"""``receive(data, *, transport, source) -> Outcome``."""


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one mail.

    ``buffered``: a part of a multi-mail message, kept until the rest arrives;
    ``delivered``: an envelope went to ``receive_envelope`` and was accepted;
    ``duplicate``: a part of a message already finished; ``refused``: dropped for
    good (``code`` says why); ``deferred``: try this mail again later.
    """

    verdict: Verdict
    code: str = ""
    status: int | None = None
    agent_id: str | None = None


class MailIntake:
    """Turns raw mails into envelopes for ``receive_envelope``; thread-safe."""

    def __init__(self, *, server_key: PrivateKey, receive: Receive,
                 limits: Limits | None = None, sender_keys: SenderKeys | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.limits = limits or Limits()
        self._server_key = server_key
        self._receive = receive
        self._sender_keys = sender_keys
        self._parts = (Reassembler(self.limits) if clock is None
                       else Reassembler(self.limits, clock=clock))
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        """``mails``, ``parts``, ``delivered``, ``duplicate``, ``deferred``, ``expired``,
        and ``refused:<code>`` — for logs, tests and status output."""

    @property
    def pending(self) -> int:
        """Multi-mail messages waiting for parts."""
        return self._parts.pending

    def expire(self) -> int:
        """Drop incomplete messages past their time-to-live (also done on every mail)."""
        with self._lock:
            return self._expire()

    def _expire(self) -> int:
        gone = self._parts.expire()
        for item in gone:
            self.counters["expired"] += 1
            log.warning("mail intake: dropped incomplete message %s from agent %s "
                        "(%d of %d parts arrived)", item.message_id, item.agent,
                        item.have, item.total)
        return len(gone)

    def handle(self, raw: bytes, *, source: str) -> Result:
        """One mail, start to end; never raises for anything the mail contains."""
        with self._lock:
            self.counters["mails"] += 1
            self._expire()
            try:
                part = open_mail_part(extract_part(raw, max_mail_bytes=self.limits.max_mail_bytes),
                                      server_key=self._server_key,
                                      sender_keys=self._sender_keys)
                self.counters["parts"] += 1
                if self._parts.finished(part):
                    self.counters["duplicate"] += 1
                    return Result("duplicate", agent_id=part.agent)
                complete = self._parts.add(part)
            except MailError as exc:
                return self._refused_mail(exc, source)
            except Exception:
                # The key lookup's database, or a bug: keep the mail for a retry.
                log.exception("mail intake: could not handle a mail from %s; deferring it",
                              source)
                self.counters["deferred"] += 1
                return Result("deferred", "error")
            if complete is None:
                return Result("buffered", agent_id=part.agent)
            try:
                outcome = self._receive(complete.data, transport=TRANSPORT, source=source)
            except Exception:
                # A bug or a database outage must not lose the mail: defer it.
                log.exception("mail intake: receive_envelope failed for a mail from %s; "
                              "deferring it", source)
                self._parts.retract(part)
                self.counters["deferred"] += 1
                return Result("deferred", "error", agent_id=part.agent)
            if outcome.status in TEMPORARY_STATUSES:
                self._parts.retract(part)
                self.counters["deferred"] += 1
                log.info("mail intake: server busy (%d); deferring a mail from agent %s",
                         outcome.status, part.agent)
                return Result("deferred", "busy", outcome.status, outcome.agent_id)
            self._parts.done(complete.key)
            if outcome.status == 200:
                if getattr(outcome, "reason", "") == "duplicate":
                    self.counters["duplicate"] += 1  # the same envelope in another mail
                    return Result("duplicate", status=200, agent_id=outcome.agent_id)
                self.counters["delivered"] += 1
                return Result("delivered", status=200, agent_id=outcome.agent_id)
            code = f"status-{outcome.status}"
            self.counters[f"refused:{code}"] += 1
            log.warning("mail intake: envelope from %s (claims agent %s) refused with "
                        "status %d; dropped", source, part.agent, outcome.status)
            return Result("refused", code, outcome.status, outcome.agent_id)

    def _refused_mail(self, exc: MailError, source: str) -> Result:
        if exc.temporary:
            self.counters["deferred"] += 1
            log.warning("mail intake: deferring a mail from %s: %s", source, exc)
            return Result("deferred", exc.code)
        self.counters[f"refused:{exc.code}"] += 1
        log.warning("mail intake: dropped a mail from %s: %s (%s)", source, exc, exc.code)
        return Result("refused", exc.code)


# --- wiring: keys, receive_envelope, limits from the config ------------------------------


def limits_from(cfg: MailIntakeConfig) -> Limits:
    """Reassembly limits from ``[mail_intake]``."""
    return Limits(max_mail_bytes=cfg.max_mail_bytes, max_parts=cfg.max_parts,
                  max_buffered_bytes=cfg.max_buffered_mb * 1024 * 1024,
                  ttl_s=cfg.incomplete_hours * 3600.0)


def registered_key(agent_id: str) -> PublicKey | None:
    """The X25519 key the agent registered at enrollment (``None``: no such agent).

    Parts are decrypted only with this key, so mail from strangers is dropped
    before it takes any room in the reassembly buffer.
    """
    from fleetroom.agents.models import Agent

    text = (Agent.objects.filter(public_id=agent_id)
            .values_list("encryption_key", flat=True).first())
    if not text:
        return None
    try:
        return decode_public_key(text)
    except ValueError:
        return None


def intake_from_settings(cfg: MailIntakeConfig) -> MailIntake:
    """The intake wired to the server's keys, the agents' registered keys and the real
    ``receive_envelope``."""
    from fleetroom.agents.keys import server_keys
    from fleetroom.agents.receive import receive_envelope

    return MailIntake(server_key=server_keys().encryption_key, receive=receive_envelope,
                      limits=limits_from(cfg), sender_keys=registered_key)


def _on_enroll(sender: object, **_: object) -> dict[str, object]:
    """``enroll_extras``: offer the intake address (``[mail_intake] address``) to agents."""
    from django.conf import settings

    cfg = getattr(settings, "CONFIG", None)
    address = getattr(getattr(cfg, "mail_intake", None), "address", None)
    return {"mail_to": address} if isinstance(address, str) and address else {}


def connect_signals() -> None:
    """Connect :func:`_on_enroll` (idempotent); called from the agents app's ``ready``."""
    from fleetroom.agents import signals

    signals.enroll_extras.connect(_on_enroll, dispatch_uid="fleetroom.mail.enroll")


# --- SMTP receiver ----------------------------------------------------------------------

Handle = Callable[[bytes, str], Awaitable[Result]]


class SmtpHandler:
    """aiosmtpd handler: accept listed recipients, hand each DATA to the intake."""

    def __init__(self, handle: Handle, accept_to: list[str] | None = None) -> None:
        self._handle = handle
        self._accept = frozenset(a.lower() for a in accept_to or ())

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """Only the intake's own addresses (an intake, never a relay)."""
        if self._accept and address.lower() not in self._accept:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        """250 for kept mail, 451 to have it retried, 554 for mail dropped for good."""
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        result = await self._handle(raw, f"smtp:{peer}")
        if result.verdict == "deferred":
            return "451 4.3.0 Temporarily unable to accept; try again later"
        if result.verdict == "refused":
            return f"554 5.6.0 Refused ({result.code})"
        return "250 2.0.0 Accepted"


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Server-side TLS for STARTTLS: TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def start_smtp(handle: Handle, *, listen: str, hostname: str = "fleetroom",
                     tls: ssl.SSLContext | None = None, require_starttls: bool = True,
                     max_mail_bytes: int = 6_000_000, accept_to: list[str] | None = None,
                     ) -> asyncio.Server:
    """Start the SMTP receiver on the running loop (``listen`` is ``HOST:PORT``)."""
    from aiosmtpd.smtp import SMTP

    host, port = _split_listen(listen)
    handler = SmtpHandler(handle, accept_to)
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(handler, data_size_limit=max_mail_bytes, hostname=hostname,
                    tls_context=tls, require_starttls=tls is not None and require_starttls,
                    timeout=120, loop=loop)

    return await loop.create_server(factory, host=host, port=port)


# --- IMAP polling -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """Where to fetch agents' mail from."""

    host: str
    user: str
    password: str
    port: int = 993
    security: Literal["tls", "starttls", "none"] = "tls"
    mailbox: str = "INBOX"
    ca_file: Path | None = None
    timeout_s: float = 60.0

    @classmethod
    def from_config(cls, cfg: MailIntakeConfig) -> ImapSettings:
        """From ``[mail_intake]`` (validated there: host, user and password are set)."""
        if not cfg.imap_host or not cfg.imap_user:
            raise ValueError("[mail_intake] imap_host and imap_user are required")
        return cls(host=cfg.imap_host, user=cfg.imap_user,
                   password=cfg.imap_password.get_secret_value(), port=cfg.imap_port,
                   security=cfg.imap_security, mailbox=cfg.imap_mailbox,
                   ca_file=cfg.imap_ca_file)


class ImapError(Exception):
    """The mailbox could not be polled (login, TLS, connection); retried next poll."""


_FETCH_RE = re.compile(rb"UID (\d+)")


def _quote_mailbox(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check(typ: str, data: list[Any], what: str) -> list[Any]:
    if typ != "OK":
        detail = data[0].decode(errors="replace") if data and isinstance(data[0], bytes) else ""
        raise ImapError(f"IMAP {what} failed: {detail[:200]}")
    return data


def poll_imap(settings: ImapSettings, handle: Callable[[bytes, str], Result], *,
              max_mail_bytes: int, batch: int = IMAP_BATCH) -> Counter[str]:
    """Fetch unread mail once; returns how many mails got which verdict.

    Delivered, buffered and duplicate mails are deleted; refused ones are marked
    read and left for an administrator to inspect; deferred ones stay unread and
    are tried again next poll.  Each fetch asks for at most ``max_mail_bytes + 1``
    bytes (a partial fetch), so a lying size cannot make us read more.
    """
    tally: Counter[str] = Counter()
    ctx: ssl.SSLContext | None = None
    if settings.security != "none":
        ctx = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        conn: imaplib.IMAP4
        if settings.security == "tls":
            conn = imaplib.IMAP4_SSL(settings.host, settings.port, ssl_context=ctx,
                                     timeout=settings.timeout_s)
        else:
            conn = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout_s)
            if settings.security == "starttls":
                conn.starttls(ssl_context=ctx)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"cannot connect to {settings.host}:{settings.port}: {exc}") from None
    try:
        conn.login(settings.user, settings.password)
        _check(*conn.select(_quote_mailbox(settings.mailbox)), "SELECT")
        data = _check(*conn.uid("SEARCH", "UNSEEN", "UNDELETED"), "SEARCH")
        uids = [u.decode("ascii") for u in (data[0] or b"").split()[:batch]]
        deleted = False
        source = f"imap:{settings.host}/{settings.mailbox}"
        for uid in uids:
            raw = _fetch(conn, uid, max_mail_bytes)
            result = handle(raw, source)  # over the cap: refused as too large
            tally[result.verdict] += 1
            if result.verdict == "refused":
                _check(*conn.uid("STORE", uid, "+FLAGS", "(\\Seen)"), "STORE")
            elif result.verdict != "deferred":
                _check(*conn.uid("STORE", uid, "+FLAGS", "(\\Deleted)"), "STORE")
                deleted = True
        if deleted:
            _check(*conn.expunge(), "EXPUNGE")
        conn.logout()
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"IMAP with {settings.host} failed: {exc}") from None
    finally:
        if conn.state != "LOGOUT":
            with contextlib.suppress(OSError):
                conn.shutdown()
    return tally


def _fetch(conn: imaplib.IMAP4, uid: str, max_mail_bytes: int) -> bytes:
    data = _check(*conn.uid("FETCH", uid, f"(BODY.PEEK[]<0.{max_mail_bytes + 1}>)"),
                  "FETCH")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and _FETCH_RE.search(item[0]):
            return bytes(item[1])
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            return bytes(item[1])
    return b""


# --- the process ----------------------------------------------------------------------


class IntakeService:
    """The SMTP receiver and/or IMAP poller around one :class:`MailIntake`.

    Mails are handled one at a time on one worker thread: the database work in
    ``receive_envelope`` is synchronous, and one thread keeps SQLite writers and
    the reassembly buffer simple.
    """

    def __init__(self, intake: MailIntake, cfg: MailIntakeConfig, *,
                 default_tls: tuple[Path, Path] | None = None) -> None:
        self.intake = intake
        self.cfg = cfg
        self._default_tls = default_tls
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail-intake")
        self.smtp: asyncio.Server | None = None
        self._closed = False

    async def handle(self, raw: bytes, source: str) -> Result:
        """Run :meth:`MailIntake.handle` on the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._handle, raw, source)

    def _handle(self, raw: bytes, source: str) -> Result:
        from django.db import close_old_connections

        close_old_connections()  # a long-running process: drop broken or aged connections
        return self.intake.handle(raw, source=source)

    async def start(self) -> None:
        """Open the SMTP listener if configured."""
        cfg = self.cfg
        if cfg.listen:
            cert = (cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key \
                else self._default_tls
            tls = tls_context(*cert) if cert else None
            self.smtp = await start_smtp(self.handle, listen=cfg.listen, hostname=cfg.hostname,
                                         tls=tls, require_starttls=cfg.require_starttls,
                                         max_mail_bytes=cfg.max_mail_bytes,
                                         accept_to=cfg.accept_to)
            log.info("mail intake: SMTP receiver on %s (%s)", cfg.listen,
                     "STARTTLS" if tls else "no TLS")

    async def poll_once(self, *, strict: bool = False) -> Counter[str]:
        """One IMAP poll on the worker thread; errors are logged (raised if ``strict``)."""
        loop = asyncio.get_running_loop()
        settings = ImapSettings.from_config(self.cfg)
        try:
            return await loop.run_in_executor(self._pool, lambda: poll_imap(
                settings, self._handle, max_mail_bytes=self.cfg.max_mail_bytes))
        except ImapError as exc:
            if strict:
                raise
            log.warning("mail intake: %s", exc)
            return Counter()

    async def run(self, stop: asyncio.Event) -> None:
        """Receive and poll until ``stop`` is set; expire stale parts every minute."""
        await self.start()
        next_poll = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                if self.cfg.imap_host and loop.time() >= next_poll:
                    tally = await self.poll_once()
                    if tally:
                        log.info("mail intake: IMAP poll: %s", dict(tally))
                    next_poll = loop.time() + self.cfg.imap_poll_seconds
                await loop.run_in_executor(self._pool, self.intake.expire)
                wait = min(60.0, max(0.5, next_poll - loop.time())) \
                    if self.cfg.imap_host else 60.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop listening, let the worker finish the mail it has, close its database
        connection."""
        if self.smtp is not None:
            self.smtp.close()
            await self.smtp.wait_closed()
            self.smtp = None
        if not self._closed:
            self._closed = True
            await asyncio.get_running_loop().run_in_executor(self._pool, _close_db)
            self._pool.shutdown(wait=True)


def _close_db() -> None:
    from django.db import connections

    connections.close_all()


def service_from_config(cfg: Config) -> IntakeService:
    """The intake service for ``[mail_intake]`` (the server's certificate as default)."""
    default_tls = (cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
    return IntakeService(intake_from_settings(cfg.mail_intake), cfg.mail_intake,
                         default_tls=default_tls)


def run_forever(service: IntakeService) -> None:
    """``fleetroom mail-intake``: receive and poll until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(main())


def poll_once(service: IntakeService) -> Counter[str]:
    """``fleetroom mail-intake --once``: one IMAP poll (for cron); raises :class:`ImapError`."""

    async def main() -> Counter[str]:
        try:
            return await service.poll_once(strict=True)
        finally:
            await service.aclose()

    return asyncio.run(main())


def main(load_config: Callable[[], Config], setup_django: Callable[[], None], *,
         once: bool = False) -> int:
    """The body of ``fleetroom mail-intake``; returns the exit status."""
    import typer

    cfg = load_config()
    mcfg = cfg.mail_intake
    if not mcfg.enabled or (once and not mcfg.imap_host):
        typer.echo("error: nothing to do: set [mail_intake] listen (SMTP receiver) or "
                   "imap_host (IMAP polling; needed for --once)", err=True)
        return 2
    setup_django()
    service = service_from_config(cfg)
    if not once:
        run_forever(service)
        return 0
    try:
        tally = poll_once(service)
    except ImapError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    typer.echo("mail intake: " + (", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
                                  or "no new mail"))
    return 0

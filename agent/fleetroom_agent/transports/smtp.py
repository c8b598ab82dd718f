"""E-mail transport: the signed envelope, encrypted to the server, sent over SMTP.

For networks where only mail leaves: the agent hands its envelopes to the
customer's own mail server (submission on 587 with STARTTLS, or implicit TLS on
465), addressed to the server's intake (``AgentIdentity.mail_to``).  The format
— a Box-encrypted, size-capped, chunked attachment — is
:mod:`fleetroom_protocol.mail`, shared with the server's intake.

One-way: :meth:`SmtpTransport.exchange` returns ``None``.  The server stores
what arrives and deduplicates repeats (counter window and item keys), but the
acknowledgement can only come back over a two-way transport, so the sender
keeps mailed items in the outbox and mails them again after a while (see
docs/mail-transport.md).

TLS is required: plain SMTP only to a server on this machine (tests, or a local
relay that itself uses TLS onwards), because the mail server's password would
otherwise cross the network in clear text.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path
from typing import Literal, Protocol

from fleetroom_protocol.mail import DEFAULT_MAX_MAIL_BYTES, MIN_MAIL_BYTES, MailError, seal_mails
from nacl.public import PrivateKey, PublicKey
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from fleetroom_agent.transports.base import TransportError
from fleetroom_agent.transports.https import is_loopback

BUSY_RETRY_S = 300.0
"""Wait after a temporary SMTP refusal (4xx): mail servers greylist for minutes."""


class SmtpSettings(BaseModel):
    """The agent's mail server (from the agent's local config, never from the server)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    """``starttls`` (submission, 587), ``tls`` (implicit, 465), ``none`` (loopback only)."""
    username: str | None = None
    password: SecretStr | None = None
    mail_from: str = Field(min_length=3, max_length=254, pattern=r"^[^\s<>@]+@[^\s<>@]+$")
    """The envelope and header sender; most servers insist it belongs to ``username``."""
    mail_to: str | None = Field(None, min_length=3, max_length=254,
                                pattern=r"^[^\s<>@]+@[^\s<>@]+$")
    """Overrides the intake address the server gave at enrollment."""
    ca_file: Path | None = None
    """PEM bundle to trust instead of the system store (a private mail server)."""
    max_mail_bytes: int = Field(DEFAULT_MAX_MAIL_BYTES, ge=MIN_MAIL_BYTES, le=100_000_000)
    timeout_s: float = Field(60.0, gt=0, le=600)
    helo_name: str | None = None

    @model_validator(mode="after")
    def _safe(self) -> SmtpSettings:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError("plain SMTP is allowed only to this machine (127.0.0.1, ::1, "
                             "localhost); use security = \"starttls\" or \"tls\"")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class MailIdentity(Protocol):
    """What the transport needs from :class:`fleetroom_agent.identity.AgentIdentity`."""

    @property
    def agent_id(self) -> str: ...
    @property
    def encryption_key(self) -> PrivateKey: ...
    @property
    def server_public_key(self) -> PublicKey: ...
    @property
    def mail_to(self) -> str | None: ...


class SmtpTransport:
    """Sends each envelope as one or more encrypted mails; never returns a reply."""

    name = "email"

    def __init__(self, settings: SmtpSettings, identity: MailIdentity) -> None:
        mail_to = settings.mail_to or identity.mail_to
        if not mail_to:
            raise TransportError("no intake address: the server offered no e-mail "
                                 "transport at enrollment and none is configured",
                                 code="config")
        self.settings = settings
        self.mail_to = mail_to
        self._agent_id = identity.agent_id
        self._agent_key = identity.encryption_key
        self._server_key = identity.server_public_key
        self._tls = self._tls_context() if settings.security != "none" else None

    def _tls_context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(
                cafile=str(self.settings.ca_file) if self.settings.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot load the CA file {self.settings.ca_file}: {exc}",
                                 code="config") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    async def exchange(self, envelope: bytes) -> bytes | None:
        """Mail ``envelope`` (all parts in one SMTP session); ``None``: no reply by mail.

        Encrypting and encoding run on a worker thread with the sending: a 16 MiB
        envelope takes a noticeable moment, and the event loop has other work.
        """
        await asyncio.to_thread(self._seal_and_send, envelope)
        return None

    def _seal_and_send(self, envelope: bytes) -> None:
        try:
            mails = seal_mails(envelope, agent_id=self._agent_id, agent_key=self._agent_key,
                               server_key=self._server_key, mail_from=self.settings.mail_from,
                               mail_to=self.mail_to, max_mail_bytes=self.settings.max_mail_bytes)
        except MailError as exc:
            raise TransportError(f"cannot mail this envelope: {exc}", code="config") from None
        self._send(mails)

    async def aclose(self) -> None:
        """Nothing held open: each exchange is its own SMTP session."""

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "tls":
            return smtplib.SMTP_SSL(s.host, s.port, local_hostname=s.helo_name,
                                    timeout=s.timeout_s, context=self._tls)
        return smtplib.SMTP(s.host, s.port, local_hostname=s.helo_name, timeout=s.timeout_s)

    def _send(self, mails: list[bytes]) -> None:
        s = self.settings
        try:
            with self._connect() as smtp:
                smtp.ehlo()
                if s.security == "starttls":
                    if not smtp.has_extn("starttls"):
                        raise TransportError(f"{s.host} does not offer STARTTLS; refusing to "
                                             "send in clear text", code="tls")
                    smtp.starttls(context=self._tls)
                    smtp.ehlo()
                if s.username is not None and s.password is not None:
                    smtp.login(s.username, s.password.get_secret_value())
                limit = smtp.esmtp_features.get("size", "").strip()
                if limit.isdigit() and int(limit) and max(map(len, mails)) > int(limit):
                    raise TransportError(f"{s.host} accepts mails up to {limit} bytes; set "
                                         "max_mail_bytes below that", code="config")
                for mail in mails:
                    smtp.sendmail(s.mail_from, [self.mail_to], mail)
        except TransportError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportError(f"{s.host} refused the login ({exc.smtp_code})",
                                 code="config") from None
        except smtplib.SMTPRecipientsRefused as exc:
            code, _ = next(iter(exc.recipients.values()))
            raise _from_code(code, f"{s.host} refused the intake address") from None
        except smtplib.SMTPResponseException as exc:
            raise _from_code(exc.smtp_code, f"{s.host} answered {exc.smtp_code}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise TransportError(f"{s.host}: {exc}", code="protocol") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise TransportError(f"TLS with {s.host} failed: {exc}", code="tls") from None
        except TimeoutError:
            raise TransportError(f"{s.host} did not answer in time", code="timeout") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"cannot reach {s.host}:{s.port}: {exc}",
                                 code="network") from None


def _from_code(code: int, message: str) -> TransportError:
    """4xx is temporary (try later, the server said so); 5xx is permanent for this mail."""
    if 400 <= code < 500:
        return TransportError(message, BUSY_RETRY_S, code="busy", status=code)
    return TransportError(message, code="protocol", status=code)

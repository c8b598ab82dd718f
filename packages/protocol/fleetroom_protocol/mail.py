"""Sealed mail: signed envelopes carried by e-mail, encrypted and chunked.

The agent seals an envelope as usual (signed with its Ed25519 key), then this
module turns it into one or more ordinary e-mails for the server's intake
(aiosmtpd receiver or IMAP polling), and the intake turns them back into the
envelope bytes, which go through the same ``receive_envelope`` as HTTPS and MQTT.

One mail carries one *part*, sent as a base64 attachment of type
:data:`CONTENT_TYPE`.  A part is binary and self-describing::

    FRM1 {"v":1,"agent":"<agent id>","pub":"<agent X25519 public key>"}\\n
    Box(agent X25519 private, server X25519 public).encrypt(
        {"agent":"<agent id>","id":"<message id>","i":<index>,"n":<total>,"size":<envelope bytes>,
         "sha256":"<hex of the whole envelope>"}\\n<chunk of the envelope>)

Why this shape:

* **Everything that matters is inside the body.** Gateways rewrite subjects,
  add disclaimers, wrap messages in multiparts and re-fold headers; none of that
  touches a base64 attachment.  Mail headers are informational only.
* **Each part is encrypted (and so authenticated) on its own**, rather than the
  whole envelope encrypted and then cut: the intake decrypts a part the moment
  it arrives and buffers only parts made with the key registered for that agent,
  so a stranger cannot fill the reassembly buffer with junk.  The part number,
  total and message id sit inside the encryption, so they cannot be altered.
* **Confidentiality from the Box, authenticity from the signature.**  The
  envelope inside is still checked with the agent's Ed25519 key before its body
  is parsed; the replay window and the item keys on the server make a mail that
  arrives twice (mail does that) store nothing new.
* **Bounded reassembly.**  :class:`Reassembler` caps parts per message, bytes
  per message and bytes buffered in total, and forgets incomplete sets after a
  time-to-live, so memory and time stay bounded whatever arrives.

No I/O here: composing and parsing bytes only; SMTP and IMAP live in the agent
transport and the server intake.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hashlib
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid
from typing import Final

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .envelope import MAX_ENVELOPE_BYTES
from .keys import decode_public_key, encode_key, key_id

PART_MAGIC: Final = b"FRM1 "
CONTENT_TYPE: Final = "application/vnd.fleetroom.mail"
MARK_HEADER: Final = "X-Fleetroom-Mail"
"""Informational: lets a mail filter route intake mail into its own folder."""

DEFAULT_MAX_MAIL_BYTES: Final = 5_000_000
"""Per mail, headers and base64 included: below the 10 MB many providers allow."""
MIN_MAIL_BYTES: Final = 16 * 1024
MAX_PARTS: Final = 1024
"""Protocol limit; receivers usually allow fewer (see :class:`Limits`)."""

_MAX_PART_HEADER: Final = 512
_HEADROOM: Final = 4096
"""Bytes reserved for the mail's own header block."""
_PART_OVERHEAD: Final = 2 * _MAX_PART_HEADER + Box.NONCE_SIZE + 16 + 64
_B64_LINE_RAW: Final = 57
_B64_LINE_WIRE: Final = 78
"""57 raw bytes make one 76-character base64 line plus CRLF."""
_MAX_HEADER_BLOCK: Final = 64 * 1024
_MAX_HEADER_LINES: Final = 1000
_MAX_MULTIPART: Final = 32
_MAX_DEPTH: Final = 8
_MULTIPART_RE: Final = re.compile(rb"multipart/", re.IGNORECASE)


class MailError(ValueError):
    """A mail or part that cannot be used; ``code`` says which rule broke.

    ``temporary`` is true only for ``busy`` (the reassembly buffer is full):
    the intake then answers "try again later" so nothing is lost.  Messages
    never echo the input.
    """

    def __init__(self, code: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.temporary = temporary


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OuterHeader(_Header):
    """In clear: who claims to have sent the part, and with which X25519 key."""

    v: int = Field(1, ge=1, le=1)
    agent: str = Field(min_length=1, max_length=64)
    pub: str = Field(min_length=44, max_length=44)


class InnerHeader(_Header):
    """Encrypted with the chunk: where it belongs in which message."""

    agent: str = Field(min_length=1, max_length=64)
    """Repeats the clear header's agent, so that one cannot be altered unnoticed."""
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    i: int = Field(ge=0, lt=MAX_PARTS)
    n: int = Field(ge=1, le=MAX_PARTS)
    size: int = Field(ge=1, le=MAX_ENVELOPE_BYTES)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Part:
    """One decrypted part (already authenticated by the Box)."""

    agent: str
    sender_key: str
    """:func:`~fleetroom_protocol.keys.key_id` of the agent's X25519 key."""
    message_id: str
    index: int
    total: int
    size: int
    sha256: str
    data: bytes


# --- agent side: envelope → mails ----------------------------------------------------


def chunk_bytes(max_mail_bytes: int) -> int:
    """How many envelope bytes one mail of at most ``max_mail_bytes`` carries."""
    if max_mail_bytes < MIN_MAIL_BYTES:
        raise MailError("too-small", f"a mail must allow at least {MIN_MAIL_BYTES} bytes")
    lines = (max_mail_bytes - _HEADROOM) // _B64_LINE_WIRE
    return lines * _B64_LINE_RAW - _PART_OVERHEAD


def seal_parts(envelope: bytes, *, agent_id: str, agent_key: PrivateKey,
               server_key: PublicKey, chunk: int, message_id: str | None = None,
               ) -> list[bytes]:
    """The envelope as encrypted parts of at most ``chunk`` envelope bytes each."""
    if not envelope:
        raise MailError("malformed", "nothing to send")
    if chunk < 1:
        raise MailError("too-small", "chunk size must be positive")
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise MailError("too-large", f"envelope over {MAX_ENVELOPE_BYTES} bytes")
    total = math.ceil(len(envelope) / chunk)
    if total > MAX_PARTS:
        raise MailError("too-many-parts", f"envelope needs {total} mails; at most "
                        f"{MAX_PARTS} are allowed (raise the mail size cap)")
    outer = OuterHeader(agent=agent_id, pub=encode_key(agent_key.public_key))
    outer_line = PART_MAGIC + outer.model_dump_json().encode() + b"\n"
    box = Box(agent_key, server_key)
    mid = message_id or secrets.token_hex(16)
    digest = hashlib.sha256(envelope).hexdigest()
    parts = []
    for index in range(total):
        inner = InnerHeader(agent=agent_id, id=mid, i=index, n=total, size=len(envelope),
                            sha256=digest)
        plain = (inner.model_dump_json().encode() + b"\n"
                 + envelope[index * chunk:(index + 1) * chunk])
        parts.append(outer_line + bytes(box.encrypt(plain)))
    return parts


def compose(part: bytes, *, mail_from: str, mail_to: str, agent_id: str, index: int,
            total: int, domain: str = "fleetroom.invalid") -> bytes:
    """One RFC 5322 mail (CRLF line ends) carrying one part as an attachment."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = mail_from
    msg["To"] = mail_to
    msg["Subject"] = f"Fleetroom agent {agent_id} ({index + 1}/{total})"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid("fleetroom", domain=domain)
    msg[MARK_HEADER] = "1"
    maintype, subtype = CONTENT_TYPE.split("/")
    msg.set_content(part, maintype=maintype, subtype=subtype, cte="base64",
                    disposition="attachment", filename=f"fleetroom-{index + 1}-of-{total}.frm")
    return msg.as_bytes()


def seal_mails(envelope: bytes, *, agent_id: str, agent_key: PrivateKey,
               server_key: PublicKey, mail_from: str, mail_to: str,
               max_mail_bytes: int = DEFAULT_MAX_MAIL_BYTES) -> list[bytes]:
    """The envelope as ready-to-send mails, each at most ``max_mail_bytes``."""
    parts = seal_parts(envelope, agent_id=agent_id, agent_key=agent_key,
                       server_key=server_key, chunk=chunk_bytes(max_mail_bytes))
    domain = mail_from.rpartition("@")[2].strip(" >") or "fleetroom.invalid"
    mails = [compose(p, mail_from=mail_from, mail_to=mail_to, agent_id=agent_id, index=i,
                     total=len(parts), domain=domain) for i, p in enumerate(parts)]
    for mail in mails:
        if len(mail) > max_mail_bytes:  # only with absurdly long addresses
            raise MailError("too-large", "a mail would exceed the size cap (are the "
                            "addresses unusually long?)")
    return mails


# --- server side: mail → part → envelope ---------------------------------------------


def _header_block_end(raw: bytes) -> int:
    head = raw[:_MAX_HEADER_BLOCK + 4]
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    if not ends:
        raise MailError("bad-mime", f"mail header block missing or over {_MAX_HEADER_BLOCK} "
                        "bytes")
    return min(ends)


def extract_part(raw: bytes, *, max_mail_bytes: int = DEFAULT_MAX_MAIL_BYTES) -> bytes:
    """The Fleetroom part carried by one raw mail, with hostile input refused early.

    Limits before the parser runs: total size, header block size and line count,
    number of multipart sections; then nesting depth, exactly one Fleetroom
    attachment, strict base64.
    """
    if len(raw) > max_mail_bytes:
        raise MailError("too-large", f"mail over {max_mail_bytes} bytes")
    end = _header_block_end(raw)
    if raw[:end].count(b"\n") + 1 > _MAX_HEADER_LINES:
        raise MailError("bad-mime", f"more than {_MAX_HEADER_LINES} header lines")
    if len(_MULTIPART_RE.findall(raw, 0, len(raw))) > _MAX_MULTIPART:
        raise MailError("bad-mime", f"more than {_MAX_MULTIPART} multipart sections")
    try:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    except (RecursionError, ValueError, TypeError, LookupError):
        raise MailError("bad-mime", "the mail cannot be parsed as MIME") from None
    found: list[Message] = []
    _collect(msg, found, 0)
    if not found:
        raise MailError("not-fleetroom", f"the mail has no {CONTENT_TYPE} attachment")
    if len(found) > 1:
        raise MailError("bad-mime", f"the mail has more than one {CONTENT_TYPE} attachment")
    part = found[0]
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte != "base64":
        raise MailError("bad-encoding", "the Fleetroom attachment must be base64-encoded")
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        raise MailError("bad-encoding", "the Fleetroom attachment is not a single part")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MailError("bad-encoding", "the Fleetroom attachment is not valid base64") \
            from None


def _collect(msg: Message, found: list[Message], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise MailError("bad-mime", f"multiparts nested deeper than {_MAX_DEPTH}")
    if msg.is_multipart():
        children = msg.get_payload()
        if not isinstance(children, list):
            raise MailError("bad-mime", "a multipart without parts")
        for child in children:
            if isinstance(child, Message):
                _collect(child, found, depth + 1)
    elif msg.get_content_type() == CONTENT_TYPE:
        found.append(msg)


SenderKeys = Callable[[str], PublicKey | None]
"""Agent id → its registered X25519 key (``None``: no such agent)."""


def open_part(part: bytes, *, server_key: PrivateKey,
              sender_keys: SenderKeys | None = None) -> Part:
    """Decrypt one part.

    With ``sender_keys`` the part must be encrypted with the key registered for
    the agent it names (the server's normal case); without it, the key carried
    in the part is used and authenticity rests on the envelope's signature alone.
    """
    nl = part.find(b"\n", 0, len(PART_MAGIC) + _MAX_PART_HEADER)
    if not part.startswith(PART_MAGIC) or nl < 0:
        raise MailError("malformed", "not a Fleetroom mail part")
    try:
        outer = OuterHeader.model_validate_json(part[len(PART_MAGIC):nl])
        claimed = decode_public_key(outer.pub)
    except (ValidationError, ValueError):
        raise MailError("malformed", "part header invalid") from None
    key = claimed
    if sender_keys is not None:
        registered = sender_keys(outer.agent)
        if registered is None:
            raise MailError("unknown-sender", "no agent with this id has an encryption key")
        if bytes(registered) != bytes(claimed):
            raise MailError("wrong-key", "part made with a key not registered for the agent")
        key = registered
    try:
        plain = Box(server_key, key).decrypt(part[nl + 1:])
    except (CryptoError, ValueError):
        raise MailError("bad-crypto", "part does not decrypt with the server's key") from None
    inl = plain.find(b"\n", 0, _MAX_PART_HEADER)
    try:
        if inl < 0:
            raise ValueError
        inner = InnerHeader.model_validate_json(plain[:inl])
    except (ValidationError, ValueError):
        raise MailError("malformed", "encrypted part header invalid") from None
    if inner.i >= inner.n:
        raise MailError("malformed", "part index beyond the total")
    if inner.agent != outer.agent:
        raise MailError("malformed", "clear and encrypted part headers disagree")
    return Part(agent=outer.agent, sender_key=key_id(key), message_id=inner.id,
                index=inner.i, total=inner.n, size=inner.size, sha256=inner.sha256,
                data=plain[inl + 1:])


@dataclass(frozen=True, slots=True)
class Limits:
    """What the intake accepts; the defaults suit a single server."""

    max_mail_bytes: int = DEFAULT_MAX_MAIL_BYTES + 1_000_000
    """A little above the agents' default cap (gateways add headers)."""
    max_parts: int = 64
    max_message_bytes: int = MAX_ENVELOPE_BYTES
    max_buffered_bytes: int = 64 * 1024 * 1024
    """All incomplete messages together."""
    ttl_s: float = 48 * 3600
    """An incomplete message is forgotten this long after its first part arrived
    (mail can be delayed for hours; a lost part must not pin memory for ever)."""
    remember: int = 10_000
    """Completed message ids kept to drop duplicates cheaply."""


@dataclass(slots=True)
class _Pending:
    first_seen: float
    total: int
    size: int
    sha256: str
    chunks: dict[int, bytes] = field(default_factory=dict)

    @property
    def buffered(self) -> int:
        return sum(len(c) for c in self.chunks.values())


@dataclass(frozen=True, slots=True)
class Complete:
    """All parts of a message are here; ``data`` is the envelope."""

    key: tuple[str, str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class Expired:
    """An incomplete message given up on."""

    agent: str
    message_id: str
    have: int
    total: int


class Reassembler:
    """Collects parts into envelopes, in any order, within :class:`Limits`.

    Not thread-safe; the intake serialises calls.  A complete message stays
    buffered until :meth:`done` (delivered, or refused for good) so that a part
    whose delivery failed temporarily can be retracted (:meth:`retract`) and
    the set completed again when the mail is retried.
    """

    def __init__(self, limits: Limits | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self._buffered = 0
        self._done: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for incomplete messages."""
        return self._buffered

    @property
    def pending(self) -> int:
        """Messages waiting for parts."""
        return len(self._pending)

    def add(self, part: Part) -> Complete | None:
        """Buffer ``part``; the envelope when it completes a message, else ``None``.

        ``None`` also for a part of a message already delivered (a duplicate mail)
        and for a part already buffered.
        """
        lim = self.limits
        if part.total > lim.max_parts:
            raise MailError("too-many-parts", f"message of {part.total} parts; at most "
                            f"{lim.max_parts} are accepted")
        if part.size > lim.max_message_bytes:
            raise MailError("too-large", f"message over {lim.max_message_bytes} bytes")
        key = (part.agent, part.sender_key, part.message_id)
        if key in self._done:
            return None
        pending = self._pending.get(key)
        if pending is None:
            pending = _Pending(self._clock(), part.total, part.size, part.sha256)
        elif (pending.total, pending.size, pending.sha256) != (part.total, part.size,
                                                               part.sha256):
            raise MailError("inconsistent", "part does not match the other parts of its "
                            "message")
        if part.index in pending.chunks:
            return None
        if pending.buffered + len(part.data) > part.size:
            raise MailError("inconsistent", "parts carry more bytes than the message size")
        if self._buffered + len(part.data) > lim.max_buffered_bytes:
            raise MailError("busy", "reassembly buffer full; try again later",
                            temporary=True)
        pending.chunks[part.index] = part.data
        self._pending[key] = pending
        self._buffered += len(part.data)
        if len(pending.chunks) < pending.total:
            return None
        data = b"".join(pending.chunks[i] for i in range(pending.total))
        if len(data) != pending.size or hashlib.sha256(data).hexdigest() != pending.sha256:
            self._drop(key)
            raise MailError("inconsistent", "reassembled message does not match its digest")
        return Complete(key, data)

    def finished(self, part: Part) -> bool:
        """Whether ``part`` belongs to a message already finished with (a duplicate)."""
        return (part.agent, part.sender_key, part.message_id) in self._done

    def retract(self, part: Part) -> None:
        """Forget ``part`` again (its delivery failed temporarily; it will be resent)."""
        key = (part.agent, part.sender_key, part.message_id)
        pending = self._pending.get(key)
        if pending is not None and part.index in pending.chunks:
            self._buffered -= len(pending.chunks.pop(part.index))
            if not pending.chunks:
                del self._pending[key]

    def done(self, key: tuple[str, str, str]) -> None:
        """The message is finished with: free it and drop later copies of its parts."""
        self._drop(key)
        self._done[key] = None
        while len(self._done) > self.limits.remember:
            self._done.popitem(last=False)

    def expire(self) -> list[Expired]:
        """Give up on messages older than the time-to-live; returns what was dropped."""
        cutoff = self._clock() - self.limits.ttl_s
        gone = [(k, p) for k, p in self._pending.items() if p.first_seen <= cutoff]
        for k, _ in gone:
            self._drop(k)
        return [Expired(k[0], k[2], len(p.chunks), p.total) for k, p in gone]

    def _drop(self, key: tuple[str, str, str]) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._buffered -= pending.buffered

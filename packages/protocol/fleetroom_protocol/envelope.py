"""The signed envelope: one wire format for every transport (HTTPS, MQTT, e-mail).

Layout (bytes, binary-safe, no canonicalisation needed)::

    FR1 <base64 Ed25519 signature>\\n
    <header: one line of JSON, at most 4 KiB>\\n
    <body: gzip-compressed JSON (or plain JSON when ``enc`` is "identity")>

The signature covers everything after the first line — the header *and* the
body bytes exactly as sent — so nothing needs re-serialising to be verified.

Why this shape:

* **Verify before parse.** A receiver reads the signature line and the small,
  size-capped header (to learn who claims to have sent it and with which key),
  verifies the signature over the raw bytes, and only then decompresses (with a
  hard cap, so a gzip bomb stops at the limit) and parses the body.
* **No clock in authentication.** Replay protection is the sender's monotonic
  counter ``ctr`` (see :mod:`.replay`); ``ts`` is the sender's wall clock, used
  only to measure skew and to interpret relative expiries, never to reject.
* **Addressed.** ``to`` names the receiver, so a reply or command for agent A is
  refused by agent B even though both trust the same server key.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TypeVar

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .keys import key_id

MAGIC: Final = b"FR1 "
MAX_HEADER_BYTES: Final = 4096
#: Default caps; receivers may pass smaller ones.
MAX_ENVELOPE_BYTES: Final = 16 * 1024 * 1024
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
SERVER: Final = "server"

M = TypeVar("M", bound=BaseModel)

Kind = Literal["batch", "poll", "reply", "command", "enroll"]


class EnvelopeError(ValueError):
    """The bytes are not an acceptable envelope; ``code`` says which rule broke.

    Codes: ``malformed`` (framing or header), ``too-large`` (envelope or
    decompressed body over the cap), ``bad-signature``, ``bad-body`` (signed
    but not the JSON the kind requires).  Messages never echo the input.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Header(BaseModel):
    """Who sent it, to whom, with which key, and in which order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    sender: str = Field(min_length=1, max_length=64)
    """The agent's id (a UUID string) or ``"server"``."""
    to: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=64)
    """:func:`fleetroom_protocol.keys.key_id` of the signing key."""
    ctr: int = Field(ge=0, lt=2**63)
    """Sender's counter: strictly new per message (a retry is a new message)."""
    ts: datetime
    """Sender's wall clock when sealing (informational: skew, relative expiry)."""
    kind: Kind
    reply_to: int | None = Field(default=None, ge=0, lt=2**63)
    """For a reply: the ``ctr`` of the request it answers."""
    enc: Literal["gzip", "identity"] = "gzip"
    body_len: int = Field(ge=0)
    """Length of the body bytes as sent (a truncated envelope fails early)."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """An envelope split into its parts, signature not yet checked."""

    header: Header
    signature: bytes
    signed: bytes
    """The signed bytes: header line, newline, body."""
    body_offset: int

    @property
    def body_raw(self) -> bytes:
        """The body exactly as sent (still compressed)."""
        return self.signed[self.body_offset:]


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def seal(body: bytes | BaseModel, *, signing_key: SigningKey, sender: str, to: str,
         ctr: int, kind: Kind, reply_to: int | None = None, compress: bool = True,
         now: datetime | None = None) -> bytes:
    """Sign ``body`` (JSON bytes or a model) into an envelope.

    ``compress=False`` is for bodies already small or already compressed
    elsewhere; gzip level 6 is the default trade-off for batches of readings.
    """
    raw = body.model_dump_json(by_alias=True).encode() if isinstance(body, BaseModel) else body
    payload = gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw
    header = Header(sender=sender, to=to, key=key_id(signing_key.verify_key), ctr=ctr,
                    ts=now or datetime.now(UTC), kind=kind, reply_to=reply_to,
                    enc="gzip" if compress else "identity", body_len=len(payload))
    signed = header.model_dump_json().encode() + b"\n" + payload
    signature = signing_key.sign(signed).signature
    return MAGIC + _b64(signature) + b"\n" + signed


def split(data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Sealed:
    """Frame and header only — cheap and bounded; the body is not touched."""
    if len(data) > max_bytes:
        raise EnvelopeError("too-large", f"envelope over {max_bytes} bytes")
    if not data.startswith(MAGIC):
        raise EnvelopeError("malformed", "not a Fleetroom envelope (magic missing)")
    first = data.find(b"\n", 0, 200)
    if first < 0:
        raise EnvelopeError("malformed", "signature line missing")
    try:
        signature = base64.b64decode(data[len(MAGIC):first], validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("malformed", "signature is not base64") from None
    if len(signature) != 64:
        raise EnvelopeError("malformed", "signature has the wrong length")
    if _b64(signature) != data[len(MAGIC):first]:
        # Non-canonical base64 (other padding bits) would decode to the same
        # signature: one signed message, several byte strings.  Only one is valid.
        raise EnvelopeError("malformed", "signature is not canonical base64")
    signed = data[first + 1:]
    end = signed.find(b"\n", 0, MAX_HEADER_BYTES + 1)
    if end < 0:
        raise EnvelopeError("malformed", f"header line missing or over {MAX_HEADER_BYTES} bytes")
    try:
        header = Header.model_validate_json(signed[:end])
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) or "header"
                                   for e in exc.errors()}))
        raise EnvelopeError("malformed", f"header invalid ({fields})") from None
    if len(signed) - end - 1 != header.body_len:
        raise EnvelopeError("malformed", "body length does not match the header")
    return Sealed(header=header, signature=signature, signed=signed, body_offset=end + 1)


def verify(sealed: Sealed, verify_key: VerifyKey) -> None:
    """Raise unless ``verify_key`` signed exactly these bytes."""
    if sealed.header.key != key_id(verify_key):
        raise EnvelopeError("bad-signature", "signed with another key")
    try:
        verify_key.verify(sealed.signed, sealed.signature)
    except BadSignatureError:
        raise EnvelopeError("bad-signature", "signature does not verify") from None


def body_bytes(sealed: Sealed, *, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The decompressed body, stopping at ``max_bytes`` (gzip bombs end here).

    Call only after :func:`verify`.
    """
    raw = sealed.body_raw
    if sealed.header.enc == "identity":
        if len(raw) > max_bytes:
            raise EnvelopeError("too-large", f"body over {max_bytes} bytes")
        return raw
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error:
        raise EnvelopeError("bad-body", "body is not valid gzip") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise EnvelopeError("too-large", f"decompressed body over {max_bytes} bytes")
    if not inflater.eof:
        raise EnvelopeError("bad-body", "gzip body is truncated")
    return out


def body_json(sealed: Sealed, *, max_bytes: int = MAX_BODY_BYTES) -> object:
    """The body parsed as JSON (after :func:`verify`)."""
    try:
        return json.loads(body_bytes(sealed, max_bytes=max_bytes))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EnvelopeError("bad-body", "body is not JSON") from None


def body_model(sealed: Sealed, model: type[M], *,
               max_bytes: int = MAX_BODY_BYTES) -> M:
    """The body validated as ``model`` (after :func:`verify`)."""
    try:
        return model.model_validate_json(body_bytes(sealed, max_bytes=max_bytes))
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) or "body"
                                   for e in exc.errors()})[:10])
        raise EnvelopeError("bad-body", f"body invalid for {sealed.header.kind} ({fields})",
                            ) from None

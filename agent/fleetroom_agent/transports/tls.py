"""TLS for every agent connection: TLS ≥ 1.2, a custom CA, optional public-key pinning.

Pinning checks the SHA-256 of the server certificate's SubjectPublicKeyInfo (the
HPKP / ``curl --pinnedpubkey`` convention), not of the whole certificate: a
certificate renewed with the same key keeps working, and the pin file can carry
a second (backup) key for a planned key change.  Pins are *in addition* to normal
chain and host-name verification — a pin never makes an untrusted certificate
acceptable; for a self-signed server pass its certificate as the CA file.

The check runs inside the TLS handshake of *every* connection (a custom
``SSLContext.sslobject_class`` / ``sslsocket_class``), so it happens before a single
request byte is sent, for HTTP/1.1 and HTTP/2, through a proxy tunnel too, and
for any library that takes an ``ssl.SSLContext`` (httpx here; paho/aiomqtt for MQTT).

Pin text: ``sha256:<base64 of the 32-byte digest>`` (also accepted: ``sha256//…``
as curl writes it, or 64 hex digits after ``sha256:``).  Compute it with
``openssl x509 -in server.pem -pubkey -noout | openssl pkey -pubin -outform der |
openssl dgst -sha256 -binary | base64`` or with :func:`pin_of_certificate`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


class PinMismatchError(ssl.SSLError):
    """The server's public key is not one of the pinned keys.

    A subclass of ``ssl.SSLError`` so every TLS stack (anyio, asyncio, paho)
    treats it as a failed handshake and closes the connection.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def spki_sha256(der_certificate: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (DER)."""
    cert = x509.load_der_x509_certificate(der_certificate)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def format_pin(digest: bytes) -> str:
    """The canonical pin text for a digest."""
    return "sha256:" + base64.b64encode(digest).decode("ascii")


def pin_of_certificate(pem_or_der: bytes) -> str:
    """The pin of a certificate given as PEM or DER bytes (the first PEM block)."""
    der = (x509.load_pem_x509_certificate(pem_or_der).public_bytes(Encoding.DER)
           if pem_or_der.lstrip().startswith(b"-----") else pem_or_der)
    return format_pin(spki_sha256(der))


def parse_pin(text: str) -> bytes:
    """The 32-byte digest from pin text; ValueError with the accepted forms otherwise."""
    value = text.strip()
    for prefix in ("sha256:", "sha256//"):
        if value.lower().startswith(prefix):
            value = value[len(prefix):]
            break
    else:
        msg = f"pin {text!r} must start with 'sha256:' (SHA-256 of the server's public key)"
        raise ValueError(msg)
    digest: bytes | None = None
    if len(value) == 64:
        try:
            digest = bytes.fromhex(value)
        except ValueError:
            digest = None
    if digest is None:
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            digest = None
    if digest is None or len(digest) != 32:
        msg = f"pin {text!r} is not 32 bytes in base64 or hex after 'sha256:'"
        raise ValueError(msg)
    return digest


def _check(der: bytes | None, pins: frozenset[bytes]) -> None:
    if der is None:
        msg = "the server presented no certificate to check the pin against"
        raise PinMismatchError(msg)
    got = spki_sha256(der)
    if got not in pins:
        msg = (f"certificate pin mismatch: the server's public key is {format_pin(got)}, "
               "which is not pinned (wrong server, interception proxy, or a new key)")
        raise PinMismatchError(msg)


def _pinned_classes(pins: frozenset[bytes]) -> tuple[type[ssl.SSLObject], type[ssl.SSLSocket]]:
    class PinnedSSLObject(ssl.SSLObject):
        """Memory-BIO TLS (asyncio, anyio, httpx) that checks the pin after the handshake."""

        def do_handshake(self) -> None:
            super().do_handshake()
            _check(self.getpeercert(binary_form=True), pins)

    class PinnedSSLSocket(ssl.SSLSocket):
        """Socket TLS (paho-mqtt, plain ``socket``) that checks the pin after the handshake."""

        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            _check(self.getpeercert(binary_form=True), pins)

    return PinnedSSLObject, PinnedSSLSocket


def build_ssl_context(*, ca_file: str | Path | None = None,
                      pins: Iterable[str] = ()) -> ssl.SSLContext:
    """A client context: TLS ≥ 1.2, chain and host name verified, pins enforced.

    ``ca_file`` replaces the system trust store (a private PKI should not also
    trust every public CA).  Raises ValueError for a bad pin, and a clear
    ValueError when the CA file cannot be read.
    """
    digests = frozenset(parse_pin(p) for p in pins)
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (FileNotFoundError, ssl.SSLError) as exc:
        msg = f"cannot use CA file {ca_file}: {exc}"
        raise ValueError(msg) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if digests:
        ctx.sslobject_class, ctx.sslsocket_class = _pinned_classes(digests)
    return ctx


def describe_tls_error(exc: ssl.SSLError, host: str) -> tuple[str, str]:
    """``(code, message)`` for a handshake failure, in words an operator can act on."""
    if isinstance(exc, PinMismatchError):
        return "pin", f"{host}: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return "tls", (f"{host}: the server's certificate is not trusted ({detail}); "
                       "pass the server's CA with --ca-file if it uses a private CA")
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return "tls", (f"{host}: the server closed the connection during the TLS handshake; "
                       "it probably offers only TLS older than 1.2 (which the agent refuses) "
                       "or no cipher in common")
    reason = (exc.reason or str(exc)).lower()
    if "protocol" in reason or "version" in reason:
        return "tls", (f"{host}: TLS handshake failed ({exc.reason or exc}); the server "
                       "probably offers only TLS older than 1.2, which the agent refuses")
    return "tls", f"{host}: TLS handshake failed ({exc.reason or exc})"

"""Key handling shared by agent and server: ids, text encodings, proof of possession.

Each agent has two key pairs made on its own machine at enrollment: Ed25519 for
signing everything it sends, X25519 for receiving mail-encrypted replies.  The
server has the same two kinds.  Only public keys ever cross the wire.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

ENROLL_PROOF_CONTEXT: Final = b"fleetroom-enroll/1\n"


def key_id(key: VerifyKey | PublicKey) -> str:
    """A short, stable name for a public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(bytes(key)).hexdigest()[:16]


def encode_key(key: VerifyKey | PublicKey | SigningKey | PrivateKey) -> str:
    """Base64 text of the raw 32 key bytes (for JSON and TOML)."""
    return base64.b64encode(bytes(key)).decode("ascii")


def _raw32(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("key is not base64") from None
    if len(raw) != 32:
        raise ValueError("key must be 32 bytes")
    return raw


def decode_verify_key(text: str) -> VerifyKey:
    """An Ed25519 public key from :func:`encode_key` text."""
    return VerifyKey(_raw32(text))


def decode_public_key(text: str) -> PublicKey:
    """An X25519 public key from :func:`encode_key` text."""
    return PublicKey(_raw32(text))


def decode_signing_key(text: str) -> SigningKey:
    """An Ed25519 private key (seed) from :func:`encode_key` text."""
    return SigningKey(_raw32(text))


def decode_private_key(text: str) -> PrivateKey:
    """An X25519 private key from :func:`encode_key` text."""
    return PrivateKey(_raw32(text))


def enroll_proof_message(token: str, signing_key: str, encryption_key: str) -> bytes:
    """What a new agent signs to prove it holds the key it registers."""
    return ENROLL_PROOF_CONTEXT + "\n".join((token, signing_key, encryption_key)).encode()

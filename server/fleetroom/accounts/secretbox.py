"""Encryption at rest for MFA secrets (TOTP keys, the recovery-code seed).

allauth stores both in ``mfa_authenticator.data`` and derives the recovery codes
from the seed with HMAC, so anyone holding a database dump (a backup, an SQL
injection) could compute every user's current TOTP code and recovery codes.
allauth leaves encryption to an adapter hook; we fill it with AES-256-GCM under a
key derived from ``SECRET_KEY`` (HKDF-SHA256), so the database alone is no longer
enough.  ``SECRET_KEY_FALLBACKS`` are tried on decryption, so a key rotation keeps
existing authenticators working until they are re-encrypted.

The ``cryptography`` package comes with ``fido2``, which WebAuthn needs anyway.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "fr1:"
_INFO = b"fleetroom.accounts.mfa-secrets.v1"
_NONCE_BYTES = 12


class SecretBoxError(ValueError):
    """A stored secret could not be decrypted with the current or any fallback key."""


def _key(secret_key: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret_key.encode("utf-8"))


def encrypt(plaintext: str) -> str:
    """``fr1:`` + base64url(nonce ‖ ciphertext ‖ tag)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_key(settings.SECRET_KEY)).encrypt(nonce, plaintext.encode("utf-8"), _INFO)
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt(token: str) -> str:
    """The plaintext, or :class:`SecretBoxError` — never the stored text as it is,
    so a row written around the adapter cannot smuggle in a known secret."""
    if not token.startswith(PREFIX):
        raise SecretBoxError("not an encrypted MFA secret")
    try:
        raw = base64.urlsafe_b64decode(token[len(PREFIX):].encode("ascii"))
    except ValueError as exc:
        raise SecretBoxError("malformed MFA secret") from exc
    nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    for secret_key in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]:
        try:
            return AESGCM(_key(secret_key)).decrypt(nonce, sealed, _INFO).decode("utf-8")
        except InvalidTag:
            continue
    raise SecretBoxError("MFA secret does not decrypt with SECRET_KEY or its fallbacks")

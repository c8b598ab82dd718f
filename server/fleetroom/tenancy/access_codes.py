"""Access codes: generation, parsing and hashing (no database access here).

A code looks like ``7KQ2-M9XD-4HTV-...`` — 32 characters of Crockford base32
(no I, L, O, U; case-insensitive; O/I/L typed by mistake are read as 0/1/1) in
groups of four for reading aloud or typing from paper.  The first
:data:`LOOKUP_LEN` characters are a random, non-secret lookup id, stored in
clear with a unique index so redemption finds its row in one query; the other
:data:`SECRET_LEN` characters (130 random bits from :mod:`secrets`) are the
secret.

Only ``HMAC-SHA256(key, lookup ":" secret)`` is stored, the key derived from
``SECRET_KEY`` by Django's ``salted_hmac``.  Why a keyed fast hash and not the
password hasher (Argon2): the secret has 130 bits of entropy, so slowing down
each guess buys nothing (2^130 guesses are out of reach at any speed), while a
deliberately slow hash per attempt would hand anyone a cheap way to burn server
CPU.  The key means a leaked database alone does not even allow checking a
guess offline.  ``SECRET_KEY_FALLBACKS`` are tried too, so rotating the key
does not void outstanding codes.
"""

from __future__ import annotations

import hmac
import secrets

from django.conf import settings
from django.utils.crypto import salted_hmac

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LOOKUP_LEN = 6
SECRET_LEN = 26
"""26 × 5 bits = 130 bits of secret."""
GROUP = 4
_KEY_SALT = "fleetroom.tenancy.access_code"
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def new_code() -> tuple[str, str]:
    """A fresh ``(lookup_id, secret)``."""
    return _random(LOOKUP_LEN), _random(SECRET_LEN)


def display(lookup_id: str, secret: str) -> str:
    """The code as shown to the creator once: groups of four joined by dashes."""
    raw = lookup_id + secret
    return "-".join(raw[i:i + GROUP] for i in range(0, len(raw), GROUP))


def parse(text: str) -> tuple[str, str] | None:
    """``(lookup_id, secret)`` from what a person typed, or ``None`` if it cannot be a code."""
    if not isinstance(text, str) or len(text) > 200:
        return None
    raw = "".join(ch for ch in text.upper() if ch not in " -\t\r\n").translate(_ALIASES)
    if len(raw) != LOOKUP_LEN + SECRET_LEN or any(ch not in ALPHABET for ch in raw):
        return None
    return raw[:LOOKUP_LEN], raw[LOOKUP_LEN:]


def _mac(lookup_id: str, secret: str, key: str) -> str:
    return salted_hmac(_KEY_SALT, f"{lookup_id}:{secret}", secret=key,
                       algorithm="sha256").hexdigest()


def hash_secret(lookup_id: str, secret: str) -> str:
    """The stored form of a code (with the current ``SECRET_KEY``)."""
    return _mac(lookup_id, secret, settings.SECRET_KEY)


def check_secret(lookup_id: str, secret: str, stored: str) -> bool:
    """Constant-time check against the current key and every fallback key."""
    ok = False
    for key in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]:
        ok |= hmac.compare_digest(_mac(lookup_id, secret, key), stored)
    return ok

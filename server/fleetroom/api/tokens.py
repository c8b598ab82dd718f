"""API token strings: generation, parsing and hashing (no database access here).

A token looks like ``frt_4kQ9zT2mXb7P_<40 characters>``:

* ``frt_`` names the product, so secret scanners (GitHub's, gitleaks) and people
  reading a log can recognise a leaked Fleetroom token;
* 12 random characters are the **key id**: not secret, stored in clear with a
  unique index so a request finds its row in one query, and shown in the token
  list so a person can tell their tokens apart;
* 40 random characters (62-letter alphabet, 238 bits from :mod:`secrets`) are the
  secret.

Only ``HMAC-SHA256(key, key_id ":" secret)`` is stored, keyed from
``SECRET_KEY`` with Django's ``salted_hmac`` — the same reasoning as access codes
(:mod:`fleetroom.tenancy.access_codes`): with this much entropy a slow password
hash buys nothing against guessing and would let anyone burn server CPU with
made-up tokens, while the key means a leaked database alone cannot even check a
guess offline.  ``SECRET_KEY_FALLBACKS`` are tried too, so rotating the key does
not void every token at once.
"""

from __future__ import annotations

import hmac
import secrets
import string

from django.conf import settings
from django.utils.crypto import salted_hmac

PREFIX = "frt"
ALPHABET = string.ascii_letters + string.digits
KEY_ID_LEN = 12
SECRET_LEN = 40
TOKEN_LEN = len(PREFIX) + 1 + KEY_ID_LEN + 1 + SECRET_LEN
_KEY_SALT = "fleetroom.api.token"
_ALLOWED = frozenset(ALPHABET)


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def new_token() -> tuple[str, str]:
    """A fresh ``(key_id, secret)``."""
    return _random(KEY_ID_LEN), _random(SECRET_LEN)


def display(key_id: str, secret: str) -> str:
    """The token as its owner sees it, once, and sends it in ``Authorization: Bearer``."""
    return f"{PREFIX}_{key_id}_{secret}"


def parse(text: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` from a presented token, or ``None`` if it cannot be one.

    Checked before any database access, so garbage costs no query.
    """
    if not isinstance(text, str) or len(text.strip()) != TOKEN_LEN:
        return None
    prefix, _, rest = text.strip().partition("_")
    key_id, _, secret = rest.partition("_")
    if (prefix != PREFIX or len(key_id) != KEY_ID_LEN or len(secret) != SECRET_LEN
            or not _ALLOWED.issuperset(key_id) or not _ALLOWED.issuperset(secret)):
        return None
    return key_id, secret


def _mac(key_id: str, secret: str, key: str) -> str:
    return salted_hmac(_KEY_SALT, f"{key_id}:{secret}", secret=key,
                       algorithm="sha256").hexdigest()


def hash_secret(key_id: str, secret: str) -> str:
    """The stored form of a token (with the current ``SECRET_KEY``)."""
    return _mac(key_id, secret, settings.SECRET_KEY)


def check_secret(key_id: str, secret: str, stored: str) -> bool:
    """Constant-time check against the current key and every fallback key."""
    ok = False
    for key in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]:
        ok |= hmac.compare_digest(_mac(key_id, secret, key), stored)
    return ok

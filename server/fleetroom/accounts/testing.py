"""Helpers for tests that need users, logins and second factors.

Lives in the package (like ``django.test``) so every app's tests can log users in
the way a browser does — through the real login form, lockout and MFA included.
Nothing here is imported by production code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import time
from typing import Any

from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.test import Client
from django.urls import reverse

from fleetroom.accounts import secretbox
from fleetroom.accounts.models import User

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test fixture
"""Long enough for the policy (15+), on no blocklist, no context words."""


def make_user(username: str = "alice", *, email: str | None = None,
              password: str = PASSWORD, **extra: Any) -> User:
    """A saved, active user with a usable password."""
    return User.objects.create_user(username=username, email=email or f"{username}@example.com",
                                    password=password, **extra)


def totp_code(secret: str, *, at: float | None = None, digits: int = 6, period: int = 30) -> str:
    """The RFC 6238 code for a base32 ``secret`` (HMAC-SHA1), computed independently
    of allauth so tests check allauth rather than agree with it by construction."""
    key = base64.b32decode(secret.encode("ascii"), casefold=True)
    counter = int((time.time() if at is None else at) // period)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


def enable_totp(user: User) -> str:
    """Give ``user`` a TOTP authenticator and recovery codes; returns the secret."""
    secret: str = generate_totp_secret()
    TOTP.activate(user, secret)
    RecoveryCodes.activate(user)
    return secret


def stored_totp_secret(user: User) -> str:
    """The user's TOTP secret as stored (decrypted), as a real authenticator app has it."""
    auth = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    return secretbox.decrypt(auth.data["secret"])


def unused_recovery_codes(user: User) -> list[str]:
    """The recovery codes the user may still use."""
    auth = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    codes: list[str] = RecoveryCodes(auth).get_unused_codes()
    return codes


def post_login(client: Client, login: str, password: str, **extra: Any) -> Any:
    """Submit the login form as a browser does (returns the response)."""
    return client.post(reverse("account_login"), {"login": login, "password": password},
                       **extra)


def post_code(client: Client, code: str, **extra: Any) -> Any:
    """Submit the second-factor form of a pending login."""
    return client.post(reverse("mfa_authenticate"), {"code": code}, **extra)


def assert_no_inline_code(html: str) -> None:
    """Fail when a page would break under ``script-src 'self'; style-src 'self'``: every
    ``<script>`` must load a same-origin file or be a JSON data block (never executed),
    and there must be no event-handler attributes or inline styles."""
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=|<style\b", html), "inline style"

"""The status page password: scrypt-hashed at rest, compared in constant time, throttled.

Only the hash is stored (``status-page.passwd`` in the data directory, mode 0600),
written by ``fleetroom-agent set-password``.  scrypt is in the standard library
and memory-hard, so a stolen hash file is expensive to attack; the page itself
locks out after repeated failures, so the password cannot be guessed online.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..runtime.jsonfile import read_json, write_json

PASSWORD_FILE: Final = "status-page.passwd"  # noqa: S105 - a file name
MIN_LENGTH: Final = 10
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
MAX_FAILURES: Final = 5
FAILURE_WINDOW_S: Final = 300.0
LOCKOUT_S: Final = 300.0


class PasswordError(ValueError):
    """The password is unacceptable (too short, …) or the stored hash is damaged."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """``scrypt$n=…,r=…,p=…$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                            maxmem=256 * 1024 * 1024)
    return f"scrypt$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True)
class PasswordHash:
    """A parsed stored hash."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Parse the stored form; :class:`PasswordError` if it is not one of ours."""
        try:
            scheme, params, salt, digest = text.split("$")
            if scheme != "scrypt":
                raise ValueError(scheme)
            kv = dict(item.split("=") for item in params.split(","))
            return cls(int(kv["n"]), int(kv["r"]), int(kv["p"]),
                       base64.b64decode(salt, validate=True),
                       base64.b64decode(digest, validate=True))
        except (ValueError, KeyError) as exc:
            raise PasswordError("the stored status page password hash is damaged; "
                                "set it again with fleetroom-agent set-password") from exc

    def verify(self, password: str) -> bool:
        """Constant-time comparison of scrypt(password) with the stored digest."""
        got = hashlib.scrypt(password.encode(), salt=self.salt, n=self.n, r=self.r, p=self.p,
                             dklen=len(self.digest), maxmem=256 * 1024 * 1024)
        return hmac.compare_digest(got, self.digest)


def set_password(data_dir: Path, password: str) -> Path:
    """Store the hash of ``password`` for the status page; return the file written."""
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"the password needs at least {MIN_LENGTH} characters")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PASSWORD_FILE
    write_json(path, {"hash": hash_password(password), "set_at": int(time.time())})
    return path


def load_password(data_dir: Path) -> PasswordHash | None:
    """The stored hash, ``None`` when no password was set."""
    raw = read_json(data_dir / PASSWORD_FILE)
    if not isinstance(raw, dict) or not isinstance(raw.get("hash"), str):
        return None
    return PasswordHash.parse(raw["hash"])


@dataclass
class Throttle:
    """Lockout after :data:`MAX_FAILURES` failures within :data:`FAILURE_WINDOW_S`.

    Global, not per client: every client of a loopback page is 127.0.0.1, and a
    local attacker can open as many connections as they like.
    """

    max_failures: int = MAX_FAILURES
    window_s: float = FAILURE_WINDOW_S
    lockout_s: float = LOCKOUT_S
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0

    def locked(self, now: float) -> float:
        """Seconds of lockout left (0 when open)."""
        return max(0.0, self.locked_until - now)

    def failed(self, now: float) -> None:
        """Count a failure; lock when there were too many."""
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.window_s:
            self.failures.popleft()
        if len(self.failures) >= self.max_failures:
            self.locked_until = now + self.lockout_s
            self.failures.clear()

    def succeeded(self) -> None:
        """A correct password clears the failure count."""
        self.failures.clear()

"""The server's own key pairs for agent traffic, kept in the data directory.

Ed25519 signs every reply, command and profile bundle; X25519 receives what agents
encrypt to the server (e-mail).  They are made on first use and written once to
``<data_dir>/agent-server-keys.json`` with mode 0600: created under a temporary
name and hard-linked into place, so two processes starting together agree on one
pair (the second link fails and that process reads the winner's file).  A file
that other users can read is refused rather than used — the signing key is what
every agent trusts.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from fleetroom_protocol.keys import decode_private_key, decode_signing_key, encode_key, key_id
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

FILE_NAME = "agent-server-keys.json"
_lock = threading.Lock()
_cache: dict[Path, ServerKeys] = {}


class ServerKeyError(RuntimeError):
    """The key file exists but cannot be used; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The server's private keys (and the public halves agents receive at enrollment)."""

    signing_key: SigningKey
    encryption_key: PrivateKey

    @property
    def verify_key(self) -> VerifyKey:
        """Public half of ``signing_key`` (agents verify replies with it)."""
        return self.signing_key.verify_key

    @property
    def public_key(self) -> PublicKey:
        """Public half of ``encryption_key`` (agents encrypt e-mail to it)."""
        return self.encryption_key.public_key

    @property
    def key_id(self) -> str:
        """``key_id`` of the signing key (the ``key`` header of server envelopes)."""
        return key_id(self.verify_key)


def keys_path() -> Path:
    """Where the key file lives: the data directory."""
    return Path(settings.DATA_DIR) / FILE_NAME


def _read(path: Path) -> ServerKeys:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ServerKeyError(f"{path} is readable by other users (mode {mode:o}); "
                             f"run: chmod 600 {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServerKeys(signing_key=decode_signing_key(data["signing_key"]),
                          encryption_key=decode_private_key(data["encryption_key"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServerKeyError(f"{path} is not a valid key file ({exc}); restore it from a "
                             "backup — agents trust the key it holds") from None


def _create(path: Path) -> None:
    keys = ServerKeys(signing_key=SigningKey.generate(), encryption_key=PrivateKey.generate())
    text = json.dumps({"signing_key": encode_key(keys.signing_key),
                       "encryption_key": encode_key(keys.encryption_key),
                       "signing_key_id": keys.key_id}, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: use its keys
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def server_keys() -> ServerKeys:
    """The server's keys, created on first use (file mode 0600)."""
    path = keys_path()
    with _lock:
        cached = _cache.get(path)
        if cached is not None:
            return cached
        if not path.exists():
            _create(path)
        keys = _read(path)
        _cache[path] = keys
        return keys

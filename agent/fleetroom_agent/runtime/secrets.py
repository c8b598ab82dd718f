"""Secrets in the agent's config: literal, from an environment variable, or from a file.

A config file is often readable by more people than the SNMPv3 keys should be
(it sits in /etc, goes into backups and support tickets), so a secret can be a
reference instead of the value::

    auth_key = { env = "FLEETROOM_V3_AUTH_KEY" }
    priv_key = { file = "/etc/fleetroom-agent/v3-priv.key" }

A secret file must be readable by its owner only (no group or other bits), like
``ssh`` insists for private keys: a key the whole machine can read is not a secret.
Error messages name the reference, never the value.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

SECRET_MAX_BYTES: Final = 4096
"""A community or USM passphrase is short; a larger file is the wrong file."""


class SecretError(ValueError):
    """A secret reference cannot be resolved; the message never holds the secret."""


def resolve_secret(value: object, where: str, base_dir: Path) -> str:
    """The secret ``value`` stands for: a string as is, ``{env = NAME}`` or ``{file = PATH}``.

    ``base_dir`` anchors relative file paths (the config file's directory), so the
    same config works whatever the service's working directory is.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise SecretError(f"{where}: a secret is a string, {{ env = \"NAME\" }} or "
                          "{ file = \"PATH\" }")
    (kind, ref), = value.items()
    if not isinstance(ref, str) or not ref:
        raise SecretError(f"{where}: {kind} must be a non-empty string")
    if kind == "env":
        found = os.environ.get(ref)
        if found is None or found == "":
            raise SecretError(f"{where}: environment variable {ref} is not set")
        return found
    if kind == "file":
        return _read_secret_file(base_dir / Path(ref).expanduser(), where)
    raise SecretError(f"{where}: unknown secret reference {kind!r} (use env or file)")


def _read_secret_file(path: Path, where: str) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        raise SecretError(f"{where}: cannot read secret file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"{where}: secret file {path} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise SecretError(
            f"{where}: secret file {path} is readable by others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}")
    if st.st_size > SECRET_MAX_BYTES:
        raise SecretError(f"{where}: secret file {path} is over {SECRET_MAX_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{where}: cannot read secret file {path}: {type(exc).__name__}") \
            from None
    # One trailing newline is what every editor adds; anything else is part of it.
    secret = text[:-1] if text.endswith("\n") else text
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise SecretError(f"{where}: secret file {path} is empty")
    return secret


def world_readable(path: Path) -> bool:
    """True when every local user can read ``path`` (POSIX only; False elsewhere)."""
    if os.name != "posix":
        return False
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False

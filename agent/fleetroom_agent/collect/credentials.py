"""Credential sets: which to try for an address, in which order, and what worked.

A dealer configures several sets (e.g. the customer's v3 user, then ``public``);
each may be limited to networks.  What answered for a device is remembered so
the next poll tries it first and does not spend timeouts on sets that fail.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ..snmp.types import AuthProto, Credential, PrivProto, SnmpVersion, Target


@dataclass(frozen=True, slots=True)
class CredentialSet:
    """A credential and the networks it may be used on (empty = everywhere)."""

    credential: Credential
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def applies_to(self, address: str) -> bool:
        """True when ``address`` lies in one of the set's networks (or it has none)."""
        if not self.networks:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip in n for n in self.networks)


@dataclass
class CredentialMemory:
    """Per-device memory of the credential set that last worked (by name)."""

    worked: dict[str, str] = field(default_factory=dict)

    def order(self, target: Target, sets: Sequence[CredentialSet]) -> list[Credential]:
        """Applicable credentials, the one that worked last time first."""
        usable = [s.credential for s in sets if s.applies_to(target.address)]
        last = self.worked.get(str(target))
        usable.sort(key=lambda c: c.name != last)
        return usable

    def remember(self, target: Target, credential: Credential) -> None:
        """Note that ``credential`` answered for ``target``."""
        self.worked[str(target)] = credential.name


class CredentialConfigError(ValueError):
    """A credential file or option is wrong; the message names what and where."""


_VERSIONS = get_args(SnmpVersion)
_AUTH = get_args(AuthProto)
_PRIV = get_args(PrivProto)


def make_credential(*, name: str, version: str = "2c", community: str | None = None,
                    user: str | None = None, auth_proto: str | None = None,
                    auth_key: str | None = None, priv_proto: str | None = None,
                    priv_key: str | None = None, context: str = "") -> Credential:
    """Validate and build one credential; errors never echo the secrets."""
    version = {"v1": "1", "v2": "2c", "v2c": "2c", "v3": "3", "2": "2c"}.get(version, version)
    if version not in _VERSIONS:
        raise CredentialConfigError(f"{name}: SNMP version must be 1, 2c or 3, not {version!r}")
    auth = (auth_proto or ("SHA" if auth_key else "none")).upper().replace("-", "")
    priv = (priv_proto or ("AES" if priv_key else "none")).upper().replace("-", "")
    auth = "none" if auth == "NONE" else auth
    priv = "none" if priv == "NONE" else priv
    if version == "3":
        if not user:
            raise CredentialConfigError(f"{name}: SNMPv3 needs a user name")
        if auth not in _AUTH:
            raise CredentialConfigError(
                f"{name}: unknown auth protocol {auth_proto!r} (one of {', '.join(_AUTH)})")
        if priv not in _PRIV:
            raise CredentialConfigError(
                f"{name}: unknown privacy protocol {priv_proto!r} (one of {', '.join(_PRIV)})")
        if auth != "none" and (not auth_key or len(auth_key) < 8):
            raise CredentialConfigError(f"{name}: the auth key must have at least 8 characters")
        if priv != "none":
            if auth == "none":
                raise CredentialConfigError(f"{name}: privacy needs authentication too")
            if not priv_key or len(priv_key) < 8:
                raise CredentialConfigError(
                    f"{name}: the privacy key must have at least 8 characters")
    return Credential(name=name, version=version,  # type: ignore[arg-type]
                      community=community or "public", user=user,
                      auth_proto=auth if version == "3" else "none",  # type: ignore[arg-type]
                      auth_key=auth_key if version == "3" else None,
                      priv_proto=priv if version == "3" else "none",  # type: ignore[arg-type]
                      priv_key=priv_key if version == "3" else None, context=context)


_ALLOWED_KEYS = {"name", "version", "community", "user", "auth_proto", "auth_key",
                 "priv_proto", "priv_key", "context", "networks"}


def load_credential_file(path: Path) -> list[CredentialSet]:
    """Read ``[[credentials]]`` tables from a TOML file, strictly.

    Example::

        [[credentials]]
        name = "customer-v3"
        version = "3"
        user = "fleetroom"
        auth_proto = "SHA256"
        auth_key = "…"
        priv_proto = "AES256"
        priv_key = "…"
        networks = ["10.1.0.0/16"]

        [[credentials]]
        name = "public"
        version = "2c"
        community = "public"
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialConfigError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CredentialConfigError(f"{path}: {exc}") from exc
    entries = data.get("credentials")
    if not isinstance(entries, list) or not entries:
        raise CredentialConfigError(f"{path}: expected one or more [[credentials]] tables")
    sets: list[CredentialSet] = []
    for i, entry in enumerate(entries, 1):
        sets.append(_credential_set(entry, f"{path}: credentials #{i}"))
    names = [s.credential.name for s in sets]
    if len(set(names)) != len(names):
        raise CredentialConfigError(f"{path}: credential names must be unique")
    return sets


def _credential_set(entry: Any, where: str) -> CredentialSet:
    if not isinstance(entry, dict):
        raise CredentialConfigError(f"{where}: must be a table")
    unknown = set(entry) - _ALLOWED_KEYS
    if unknown:
        raise CredentialConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    for key, value in entry.items():
        if key != "networks" and not isinstance(value, str):
            raise CredentialConfigError(f"{where}: {key} must be a string")
    networks = entry.get("networks", [])
    if not isinstance(networks, list):
        raise CredentialConfigError(f"{where}: networks must be a list of CIDRs")
    try:
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
    except (ValueError, TypeError) as exc:
        raise CredentialConfigError(f"{where}: bad network: {exc}") from exc
    fields = {k: v for k, v in entry.items() if k != "networks"}
    fields.setdefault("name", f"set{where.rsplit('#', 1)[-1]}")
    try:
        cred = make_credential(**fields)
    except CredentialConfigError as exc:
        raise CredentialConfigError(f"{where}: {exc}") from exc
    return CredentialSet(cred, nets)

"""Enrollment token text: generation, hashing, source-network checks (no database).

A token is ``fre1_`` followed by 43 characters of ``secrets.token_urlsafe(32)``
(256 random bits).  The server stores the SHA-256 of the whole text and its first
:data:`PREFIX_LEN` characters in clear (to tell tokens apart in lists).  A keyed
or slow hash would add nothing here: nobody can test 2^256 guesses, and each
guess has to go through the enrollment endpoint, which is rate limited.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from typing import Final

TOKEN_PREFIX: Final = "fre1_"  # noqa: S105 - a marker, not a secret
PREFIX_LEN: Final = 12


def new_token() -> str:
    """A fresh token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored and looked up."""
    return hashlib.sha256(token.strip().encode("utf-8")).hexdigest()


def token_prefix(token: str) -> str:
    """The non-secret beginning shown in lists."""
    return token.strip()[:PREFIX_LEN]


def clean_network(text: str) -> str:
    """A CIDR network in canonical form (``""`` for none); ``ValueError`` if invalid.

    Host bits must be zero (``10.1.2.3/24`` is refused): a typo there would
    silently allow a different network than meant.
    """
    text = text.strip()
    if not text:
        return ""
    return ipaddress.ip_network(text, strict=True).compressed


def in_network(address: str | None, network: str) -> bool:
    """True when ``network`` is empty or ``address`` lies inside it."""
    if not network:
        return True
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    net = ipaddress.ip_network(network)
    return ip.version == net.version and ip in net

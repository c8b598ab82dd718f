"""Values, targets and credentials as the rest of the agent sees them.

Nothing here depends on pysnmp: values are plain Python objects tagged with their
SNMP type, so profiles and decoders can be tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

SnmpVersion = Literal["1", "2c", "3"]
AuthProto = Literal["none", "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProto = Literal[
    "none", "DES", "3DES", "AES", "AES128", "AES192", "AES256", "AES192C", "AES256C",
]
"""``AES192``/``AES256`` use the Blumenthal key extension (draft-blumenthal-aes-usm);
``AES192C``/``AES256C`` the Reeder ("Cisco") extension.  Devices differ, so both exist."""


class ValueType(StrEnum):
    """SNMP application types we distinguish (BER tag names)."""

    INTEGER = "Integer"
    OCTETS = "OctetString"
    OID = "ObjectIdentifier"
    IPADDRESS = "IpAddress"
    COUNTER32 = "Counter32"
    GAUGE32 = "Gauge32"
    TIMETICKS = "TimeTicks"
    OPAQUE = "Opaque"
    COUNTER64 = "Counter64"
    NULL = "Null"


class Absent(StrEnum):
    """Why a requested OID gave no value.  Absent values are never data."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"
    END_OF_MIB = "endOfMibView"
    ERROR = "error"
    """The agent answered with an error-status for this varbind (v1 noSuchName…), or
    answered the PDU but left this varbind out or gave it a type SNMP does not have."""
    NO_RESPONSE = "noResponse"
    """The device stopped answering (timeout, deadline) before the PDU holding this
    OID was answered, after answering other PDUs of the same GET.  Nothing is known
    about the OID; ask again next poll."""


@dataclass(frozen=True, slots=True)
class SnmpValue:
    """One value as received.

    ``value`` is ``int`` for numeric types, ``bytes`` for OCTET STRING / Opaque,
    ``str`` for OIDs and IP addresses.
    """

    type: ValueType
    value: int | bytes | str

    def as_int(self) -> int | None:
        """The value as an integer, or ``None`` when it is not numeric."""
        if isinstance(self.value, int):
            return self.value
        return None

    def as_text(self) -> str:
        """Display text: octets decoded as UTF-8 when valid, else Latin-1; NULs and
        control characters removed (devices pad with NULs and embed CR/LF)."""
        if isinstance(self.value, bytes):
            return clean_text(self.value)
        return str(self.value)

    def as_hex(self) -> str:
        """Octets as lowercase hex (for error-state bit fields, MACs, packed blobs)."""
        if isinstance(self.value, bytes):
            return self.value.hex()
        if isinstance(self.value, int):
            return format(self.value, "x")
        return self.value.encode().hex()


def clean_text(raw: bytes) -> str:
    """Decode device text honestly: UTF-8 if valid, else Latin-1; strip NULs/controls."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return "".join(ch for ch in text if ch == " " or (ch.isprintable() and ch != "\x7f")).strip()


Result = SnmpValue | Absent


@dataclass(frozen=True, slots=True)
class Credential:
    """One credential set.  ``name`` is what may be shown and logged; secrets never are.

    ``__repr__`` hides the keys so an accidental log line cannot leak them.
    """

    name: str
    version: SnmpVersion = "2c"
    community: str = field(default="public", repr=False)
    user: str | None = None
    auth_proto: AuthProto = "none"
    auth_key: str | None = field(default=None, repr=False)
    priv_proto: PrivProto = "none"
    priv_key: str | None = field(default=None, repr=False)
    context: str = ""

    @property
    def security_level(self) -> Literal["noAuthNoPriv", "authNoPriv", "authPriv"] | None:
        """The v3 security level implied by the protocols, ``None`` for v1/v2c."""
        if self.version != "3":
            return None
        if self.auth_proto == "none":
            return "noAuthNoPriv"
        return "authNoPriv" if self.priv_proto == "none" else "authPriv"

    def describe(self) -> str:
        """A secret-free one-liner: ``name (v3 user=ops SHA256/AES256)``."""
        if self.version == "3":
            return (f"{self.name} (v3 user={self.user} {self.auth_proto}/{self.priv_proto}"
                    f"{' ctx=' + self.context if self.context else ''})")
        return f"{self.name} (v{self.version})"

    def weak_crypto(self) -> bool:
        """True for combinations a dealer should be told to replace (v1/v2c, MD5, DES)."""
        return self.version != "3" or self.auth_proto in ("none", "MD5") or self.priv_proto in (
            "none", "DES", "3DES")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a device is: an IP literal (v4 or v6) and UDP port, plus the name we were given."""

    address: str
    port: int = 161
    hostname: str | None = None

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}" if self.port != 161 else self.address
        return f"{self.address}:{self.port}" if self.port != 161 else self.address


@dataclass(frozen=True, slots=True)
class Timing:
    """Per-request timeout, retries, and a hard deadline for a whole operation (seconds)."""

    timeout: float = 2.0
    retries: int = 1
    deadline: float = 30.0
    max_repetitions: int = 25
    max_walk_rows: int = 5000


@dataclass(slots=True)
class WalkResult:
    """Rows of a subtree walk, and why the walk stopped early if it did.

    ``stopped`` is ``None`` for a clean end (subtree left or endOfMibView) and one of
    ``not-increasing``, ``max-rows``, ``deadline``, ``timeout`` otherwise, or
    ``error`` when the device answered with an error-status (or an empty response)
    part-way; rows collected before that are still good data."""

    rows: list[tuple[str, SnmpValue]] = field(default_factory=list)
    stopped: str | None = None


class SnmpError(Exception):
    """A whole operation failed for this device (no response, auth failure, deadline)."""

    def __init__(self, kind: Literal["timeout", "auth", "protocol", "deadline", "error"],
                 message: str) -> None:
        super().__init__(message)
        self.kind = kind

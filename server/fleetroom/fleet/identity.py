"""Who a reading is from: the device identity rules, in one place.

Architecture rule 2: identity is manufacturer + serial, never the IP.  In order:

1. **Strong** — a plausible serial *and* a manufacturer (the builder, else the
   brand): ``serial/<MANUFACTURER>/<SERIAL>``, unique over the whole installation.
   The same printer reported by another customer's agent of the same dealer is the
   same row; it moves.  Reported by another dealer's agent it is refused (ingest).
2. **Weak** — no usable serial or no manufacturer.  Such a device cannot be told
   apart from another one on a different network, so its key includes the
   reporting tenant: ``mac/<tenant id>/<mac>``, else ``address/<tenant id>/<ip or
   host>``.  The device is flagged ``identity_weak``.  Before creating one, ingest
   first attaches the reading to the device the tenant already has at that MAC (else
   address), so a device whose serial read failed once is not duplicated.

Normalisation is deliberately conservative: case, surrounding and inner
whitespace and NUL padding go; everything else (dashes, leading zeros) is kept,
because two serials that differ only there may really be two devices.  Serials
that are placeholders rather than serials (``0000000``, ``UNKNOWN``, ``N/A`` …) are
treated as missing, never as an identity every such device would share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleetroom_protocol import Reading

from .models import IdentityKind

_PLACEHOLDER_SERIALS = frozenset({
    "UNKNOWN", "NONE", "NULL", "NA", "N/A", "DEFAULT", "SERIAL", "SERIALNUMBER",
    "NOTAVAILABLE", "UNDEFINED", "INVALID", "EMPTY", "TBD",
})
_PLACEHOLDER_CHARS = frozenset("0X?-*._ F")
_MANUFACTURER_ALIASES = {
    "HEWLETTPACKARD": "HP", "HPINC": "HP", "HPDEVELOPMENTCOMPANY": "HP",
    "KYOCERAMITA": "KYOCERA", "KYOCERADOCUMENTSOLUTIONS": "KYOCERA",
}
_NON_ALNUM = re.compile(r"[^0-9A-Z]+")
_MAC_SEPARATORS = re.compile(r"[\s:.-]+")
_HEX_ONLY = re.compile(r"[0-9a-f]+")


def serial_key(serial: str | None) -> str | None:
    """The comparable form of a serial number, or ``None`` when it is not one."""
    if not serial:
        return None
    text = "".join(serial.replace("\x00", " ").split()).upper()
    if not text or text in _PLACEHOLDER_SERIALS or set(text) <= _PLACEHOLDER_CHARS:
        return None
    return text


def manufacturer_key(name: str | None) -> str | None:
    """Upper-case letters and digits only (``Konica Minolta`` → ``KONICAMINOLTA``)."""
    if not name:
        return None
    key = _NON_ALNUM.sub("", name.upper())
    return _MANUFACTURER_ALIASES.get(key, key) or None


def normalise_mac(mac: str | None) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` (or the 64-bit form); ``None`` for anything that is not a
    MAC, and for all zeros or all ones (placeholders some devices report)."""
    if not mac:
        return None
    compact = _MAC_SEPARATORS.sub("", mac.strip().lower())
    if len(compact) not in (12, 16) or not _HEX_ONLY.fullmatch(compact):
        return None
    if set(compact) <= {"0"} or set(compact) == {"f"}:
        return None
    return ":".join(compact[i:i + 2] for i in range(0, len(compact), 2))


def reading_address(reading: Reading) -> str | None:
    """The device's IP as resolved by the agent, else the host part of the target."""
    if reading.identity.ip:
        return reading.identity.ip.strip() or None
    target = reading.target.strip()
    if not target:
        return None
    if target.startswith("["):  # [v6]:port
        return target[1:].split("]", 1)[0] or None
    if target.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        target = target.split(":", 1)[0]
    return target or None


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The identity of a reading, computed without touching the database."""

    kind: IdentityKind
    key: str
    manufacturer: str
    """As reported (builder, else brand), for display; ``""`` when unknown."""
    serial: str
    """As reported (stripped), ``""`` when unusable."""
    mac: str | None
    address: str | None

    @property
    def weak(self) -> bool:
        """True unless manufacturer + serial identify the device."""
        return self.kind != IdentityKind.SERIAL


class NoIdentity(ValueError):
    """The reading names no serial, MAC or address: it cannot be attributed."""


def identify(reading: Reading, tenant_id: int) -> DeviceIdentity:
    """The identity of ``reading`` as reported to ``tenant_id`` (see module docstring)."""
    ident = reading.identity
    manufacturer = (ident.manufacturer or ident.vendor or "").strip()
    m_key = manufacturer_key(manufacturer)
    s_key = serial_key(ident.serial)
    mac = normalise_mac(ident.mac)
    address = reading_address(reading)
    serial = ident.serial.strip() if s_key and ident.serial else ""
    if m_key and s_key:
        return DeviceIdentity(IdentityKind.SERIAL, f"serial/{m_key}/{s_key}", manufacturer,
                              serial, mac, address)
    if mac:
        return DeviceIdentity(IdentityKind.MAC, f"mac/{tenant_id}/{mac}", manufacturer,
                              serial, mac, address)
    if address:
        return DeviceIdentity(IdentityKind.ADDRESS, f"address/{tenant_id}/{address.lower()}",
                              manufacturer, serial, mac, address)
    raise NoIdentity("the reading has no serial number, MAC address or network address")

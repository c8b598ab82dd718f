"""The snmprec recording format (snmpsim's ``OID|TAG|VALUE`` lines).

``fleetroom-agent walk`` writes it so a technician can record a new model once and
anyone can profile it later against snmpsim or :class:`RecordingClient` — the
docuFORM "SNMP walker", in an open format.  Tags are BER type numbers; a tag with
an ``x`` suffix carries its value as hex.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from .snmp.types import SnmpValue, ValueType

TAGS: dict[ValueType, int] = {
    ValueType.INTEGER: 2,
    ValueType.OCTETS: 4,
    ValueType.NULL: 5,
    ValueType.OID: 6,
    ValueType.IPADDRESS: 64,
    ValueType.COUNTER32: 65,
    ValueType.GAUGE32: 66,
    ValueType.TIMETICKS: 67,
    ValueType.OPAQUE: 68,
    ValueType.COUNTER64: 70,
}
TYPES: dict[int, ValueType] = {v: k for k, v in TAGS.items()}

REDACT_PREFIXES: dict[str, str] = {
    "1.3.6.1.2.1.1.4.": "sysContact",
    "1.3.6.1.2.1.1.5.": "sysName",
    "1.3.6.1.2.1.1.6.": "sysLocation",
    "1.3.6.1.2.1.43.5.1.1.16.": "prtGeneralPrinterName",
    "1.3.6.1.2.1.43.5.1.1.17.": "prtGeneralSerialNumber",
    "1.3.6.1.2.1.43.8.2.1.17.": "prtInputSerialNumber",
    "1.3.6.1.2.1.25.3.2.1.4.": "hrDeviceID (may embed serial)",
}
"""Standard places for serials, names, locations and contacts.  Vendor serial OIDs
come from profiles (every identity ``serial`` rule), see :func:`redaction_oids`."""

_SERIAL_IN_TEXT = re.compile(r"(?i)\b(SN|S/N|serial(?: number)?)\s*[:=#]?\s*[A-Z0-9-]{5,}")
_PRINTABLE = re.compile(rb"^[\x20-\x7e]*$")


class SnmprecError(ValueError):
    """A recording line cannot be parsed; the message names the line."""


def format_line(oid: str, value: SnmpValue) -> str:
    """One snmprec line; octets that are not plain printable ASCII are written as hex."""
    tag = TAGS[value.type]
    v = value.value
    if isinstance(v, bytes):
        if _PRINTABLE.match(v) and b"|" not in v and not v.endswith(b" "):
            return f"{oid}|{tag}|{v.decode('ascii')}"
        return f"{oid}|{tag}x|{v.hex()}"
    return f"{oid}|{tag}|{v}"


def parse_line(line: str, lineno: int = 0) -> tuple[str, SnmpValue] | None:
    """Parse a line; ``None`` for blank lines.  Variation modules (``65:numeric``)
    are read as their ``initial`` value (or 0) — a static snapshot."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    parts = line.split("|", 2)
    if len(parts) != 3:
        raise SnmprecError(f"line {lineno}: expected OID|TAG|VALUE")
    oid, tag_text, raw = parts
    oid = oid.strip().lstrip(".")
    tag_text, _, module = tag_text.partition(":")
    is_hex = tag_text.endswith("x")
    try:
        vtype = TYPES[int(tag_text.rstrip("x"))]
    except (KeyError, ValueError) as exc:
        raise SnmprecError(f"line {lineno}: unknown tag {parts[1]!r}") from exc
    if module:
        m = re.search(r"(?:^|,)initial=([^,]*)", raw)
        raw = m.group(1) if m else ("0" if vtype is not ValueType.OCTETS else "")
    try:
        if vtype in (ValueType.OCTETS, ValueType.OPAQUE):
            return oid, SnmpValue(vtype, bytes.fromhex(raw) if is_hex else raw.encode("latin-1"))
        if vtype is ValueType.NULL:
            return oid, SnmpValue(vtype, b"")
        if vtype in (ValueType.OID, ValueType.IPADDRESS):
            if is_hex and vtype is ValueType.IPADDRESS:
                return oid, SnmpValue(vtype, ".".join(str(b) for b in bytes.fromhex(raw)))
            return oid, SnmpValue(vtype, raw.strip().lstrip("."))
        return oid, SnmpValue(vtype, int(raw.strip() or "0"))
    except ValueError as exc:
        raise SnmprecError(f"line {lineno}: bad {vtype.value} value {raw[:40]!r}") from exc


def oid_key(oid: str) -> tuple[int, ...]:
    """Numeric sort key: SNMP order, not string order (``1.10`` after ``1.9``)."""
    return tuple(int(p) for p in oid.split("."))


def read_recording(path: Path) -> dict[str, SnmpValue]:
    """All values of a recording file, keyed by OID."""
    out: dict[str, SnmpValue] = {}
    with path.open(encoding="latin-1") as fh:
        for n, line in enumerate(fh, 1):
            parsed = parse_line(line, n)
            if parsed is not None:
                out[parsed[0]] = parsed[1]
    return out


def redact(oid: str, value: SnmpValue, extra: Iterable[str] = ()) -> SnmpValue:
    """Blank serials, names, locations and contacts (``walk --redact``).

    Blanked values keep their type so the recording still matches profiles; text
    that *embeds* a serial (``SN:ABC123`` in sysDescr) has just that part blanked.
    """
    targets = [*REDACT_PREFIXES, *(e if e.endswith(".") else e + "." for e in extra)]
    if any((oid + ".").startswith(p) or oid == p.rstrip(".") for p in targets):
        if value.type in (ValueType.OCTETS, ValueType.OPAQUE):
            return SnmpValue(value.type, b"REDACTED" if value.value else b"")
        return value
    if value.type is ValueType.OCTETS and isinstance(value.value, bytes):
        text = value.value.decode("latin-1")
        cleaned = _SERIAL_IN_TEXT.sub(lambda m: f"{m.group(1)}:REDACTED", text)
        if cleaned != text:
            return SnmpValue(value.type, cleaned.encode("latin-1"))
    return value


def write_recording(rows: Iterable[tuple[str, SnmpValue]]) -> Iterator[str]:
    """Lines in SNMP order, one per OID (later duplicates win)."""
    unique = dict(rows)
    for oid in sorted(unique, key=oid_key):
        yield format_line(oid, unique[oid])

"""Brother's packed page-counter blob (BROTHER-MIB ``brInfoCounter``).

Brother printers answer ``brInfoCounter.0`` (1.3.6.1.4.1.2435.2.3.9.4.2.1.5.5.10.0,
an OCTET STRING described only as "Page counter" in BROTHER-MIB) with several
counters packed into one value.  The layout below is the one the ``brother``
Python library by Maciej Bieniek (github.com/bieniu/brother, used by Home
Assistant's brother integration) reads, learnt from its ``__init__.py``,
``utils.py`` and ``const.py``:

* the last octet is a trailer the library drops unread (it calls it a checksum;
  the library's own sample blob ends in ``0xff``);
* the rest is a run of records ``code (1 octet) · 0x01 · length · value``; every
  sample in the library has length 4 and a big-endian unsigned value, and the
  library reads the value as the record's last four octets.

Known codes (``VALUES_COUNTERS`` in the library's const.py) get a normalised name;
any other code is returned with ``name=None`` so nothing the printer says is lost.
The decoder is total: on anything it cannot parse it returns what it decoded so
far plus a problem, and never raises.
"""

from __future__ import annotations

from . import DecodedCounter, DecodeResult, register

RECORD_TYPE = 0x01
"""Second octet of every record in the source's samples."""

MAX_VALUE_OCTETS = 8
"""A length octet above this is not a counter (the source only ever has 4)."""

COUNTER_CODES: dict[int, tuple[str, str]] = {
    # code: (normalised name, label as the source names it)
    0x00: ("total", "page counter"),
    0x01: ("mono", "black-and-white counter"),
    0x02: ("colour", "colour counter"),
    0x06: ("duplex", "duplex unit pages counter"),
    0x12: ("black_counter", "black counter"),
    0x13: ("cyan_counter", "cyan counter"),
    0x14: ("magenta_counter", "magenta counter"),
    0x15: ("yellow_counter", "yellow counter"),
    0x16: ("image_counter", "image counter"),
}


def _records(body: bytes, result: DecodeResult) -> None:
    """Append every well-formed record of ``body``; stop at the first bad one."""
    seen: set[int] = set()
    pos = 0
    while pos < len(body):
        if pos + 3 > len(body):
            result.problems.append(
                f"record at octet {pos}: {len(body) - pos} octet(s) left, a header needs 3; "
                "rest ignored")
            return
        code, rtype, length = body[pos], body[pos + 1], body[pos + 2]
        if rtype != RECORD_TYPE:
            result.problems.append(
                f"record at octet {pos}: type octet 0x{rtype:02x}, expected 0x01; "
                "rest ignored")
            return
        if not 1 <= length <= MAX_VALUE_OCTETS:
            result.problems.append(
                f"record at octet {pos}: value length {length} outside 1..{MAX_VALUE_OCTETS}; "
                "rest ignored")
            return
        end = pos + 3 + length
        if end > len(body):
            result.problems.append(
                f"record at octet {pos}: value of {length} octets runs past the end; "
                "rest ignored")
            return
        value = int.from_bytes(body[pos + 3:end], "big")
        key = f"{code:02x}"
        known = COUNTER_CODES.get(code)
        if code in seen:
            result.problems.append(f"code {key} appears twice; later value kept as raw only")
            result.counters.append(DecodedCounter(key, value, None, known[1] if known else None))
        else:
            seen.add(code)
            result.counters.append(DecodedCounter(key, value, known[0] if known else None,
                                                  known[1] if known else None))
        pos = end


@register("brother_counters")
def decode_brother_counters(raw: bytes) -> DecodeResult:
    """Decode ``brInfoCounter`` (see the module docstring for layout and source)."""
    result = DecodeResult()
    if not isinstance(raw, bytes | bytearray | memoryview):
        result.problems.append(f"not an octet string: {type(raw).__name__}")
        return result
    data = bytes(raw)
    if not data:
        result.problems.append("empty value")
        return result
    # The final octet is the trailer the source drops; everything before it is records.
    _records(data[:-1], result)
    if not result.counters and not result.problems:
        result.problems.append("no counter records before the trailer octet")
    return result

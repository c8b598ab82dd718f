"""Brother packed counter values (placeholder until the Brother profile lands)."""

from __future__ import annotations

from . import DecodeResult, register


@register("brother_counters")
def decode_brother_counters(raw: bytes) -> DecodeResult:
    """Decode Brother's packed counter blob (see the Brother profile for the source)."""
    return DecodeResult(problems=[f"brother counter blob of {len(raw)} bytes not decoded yet"])

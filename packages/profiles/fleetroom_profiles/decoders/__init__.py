"""Registered decoders for packed vendor values that YAML cannot describe.

A decoder turns the raw octets of one OID into counters.  Profiles name decoders;
the loader refuses a profile naming an unknown one.  Decoders must be total: on
bytes they do not understand they return what they could decode plus a problem,
never raise, because a device's firmware update can change a blob's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DecodedCounter:
    """A counter found inside a packed value: raw key, and normalised name if known."""

    key: str
    value: int
    name: str | None = None
    label: str | None = None


@dataclass(slots=True)
class DecodeResult:
    """Counters found, and what could not be decoded (kept for the reading's ``errors``)."""

    counters: list[DecodedCounter] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


Decoder = Callable[[bytes], DecodeResult]
_REGISTRY: dict[str, Decoder] = {}


def register(name: str) -> Callable[[Decoder], Decoder]:
    """Class the function as decoder ``name`` (used as ``decoder:`` in profiles)."""

    def wrap(fn: Decoder) -> Decoder:
        if name in _REGISTRY:
            raise ValueError(f"decoder {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def get_decoder(name: str) -> Decoder:
    """The decoder registered as ``name``; ``KeyError`` if there is none."""
    _load_builtin()
    return _REGISTRY[name]


def registered_decoders() -> frozenset[str]:
    """Names of every decoder profiles may use."""
    _load_builtin()
    return frozenset(_REGISTRY)


def _load_builtin() -> None:
    from . import brother  # noqa: F401  (registers on import)

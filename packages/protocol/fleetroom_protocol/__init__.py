"""Fleetroom wire models shared by agent and server (versioned, no I/O)."""

from .reading import (
    SCHEMA_V1,
    Alert,
    Capabilities,
    CoarseState,
    Counter,
    Identity,
    Missing,
    OutputBin,
    ProfileMatch,
    RawCounter,
    Reading,
    Status,
    Supply,
    Tray,
    counter_delta,
)

__all__ = [
    "SCHEMA_V1",
    "Alert",
    "Capabilities",
    "CoarseState",
    "Counter",
    "Identity",
    "Missing",
    "OutputBin",
    "ProfileMatch",
    "RawCounter",
    "Reading",
    "Status",
    "Supply",
    "Tray",
    "counter_delta",
]

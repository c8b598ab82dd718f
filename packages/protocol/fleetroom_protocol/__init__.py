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
# Envelope, keys, replay window and message bodies live in their own modules
# (fleetroom_protocol.envelope, .keys, .replay, .messages) and are imported from there.

"""Translatable names for the codes readings carry (counter names, supply types and
states, alert severities).

The stored values are protocol codes (PWG 5106.1 counter names, IANA Printer-MIB
enumerations) and stay so; only the pages translate them.  A code without an entry
here is shown as it is — a new vendor code is still readable, just not translated.
"""

from __future__ import annotations

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

COUNTERS: dict[str, Promise] = {
    "total": _("Total"),
    "mono": _("Black and white"),
    "colour": _("Colour"),
    "print_total": _("Prints"),
    "print_mono": _("Prints, black and white"),
    "print_colour": _("Prints, colour"),
    "copy_total": _("Copies"),
    "copy_mono": _("Copies, black and white"),
    "copy_colour": _("Copies, colour"),
    "fax_total": _("Fax prints"),
    "scan_total": _("Scans"),
    "duplex": _("Duplex sheets"),
}

SUPPLY_STATES: dict[str, Promise] = {
    "ok": _("OK"),
    "low": _("Low"),
    "empty": _("Empty"),
    "some-remaining": _("Some remaining"),
    "almost-full": _("Almost full"),
    "full": _("Full"),
    "unknown": _("Level not reported"),
}

SUPPLY_TYPES: dict[str, Promise] = {
    "toner": _("Toner"),
    "ink": _("Ink"),
    "inkCartridge": _("Ink cartridge"),
    "tonerCartridge": _("Toner cartridge"),
    "wasteToner": _("Waste toner"),
    "wasteInk": _("Waste ink"),
    "opc": _("Drum"),
    "developer": _("Developer"),
    "fuser": _("Fuser"),
    "transferUnit": _("Transfer unit"),
    "staples": _("Staples"),
    "other": _("Other supply"),
    "unknown": _("Supply"),
}

COLOURS: dict[str, Promise] = {
    "black": _("black"),
    "cyan": _("cyan"),
    "magenta": _("magenta"),
    "yellow": _("yellow"),
}

SEVERITIES: dict[str, Promise] = {
    "critical": _("Critical"),
    "warning": _("Warning"),
    "warningBinaryChangeEvent": _("Warning"),
    "other": _("Other"),
    "unknown": _("Unknown"),
}


def counter(name: str) -> str:
    """The display name of a counter."""
    return str(COUNTERS.get(name, name))


def supply_state(state: str) -> str:
    """The display name of a supply's coarse state."""
    return str(SUPPLY_STATES.get(state, state))


def supply_name(supply_type: str, colour: str, description: str) -> str:
    """What a person calls the supply: the device's own description when it gave one,
    else type and colour."""
    if description.strip():
        return description.strip()
    kind = str(SUPPLY_TYPES.get(supply_type, supply_type))
    if colour:
        return f"{kind} ({COLOURS.get(colour.lower(), colour)})"
    return kind


def severity(value: str) -> str:
    """The display name of an alert severity."""
    return str(SEVERITIES.get(value, value))

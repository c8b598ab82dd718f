"""The normalised device reading, version 1.

This is the one shape a printer reading has everywhere: on the agent's command
line (``scan --json``, ``probe --json``), in the agent's outbox, on the wire and in
the server's ingest.  Field names are fixed because other tools read them; new
fields may be added in a minor revision, renaming or removing one needs a new
``schema`` version.

Rules the models enforce rather than merely document:

* a supply has ``level_percent`` only when the device gave a real level and a
  real capacity; otherwise the value is ``None`` and ``state`` says what is known;
* every field the device did not give is listed in ``missing`` with a reason, so
  a partial reading is honest instead of padded with guesses.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_V1 = "fleetroom.reading/1"


class _Model(BaseModel):
    """Strict base: unknown fields are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


class Identity(_Model):
    """Who the device is.  Identity for the server is manufacturer + serial, never the IP."""

    vendor: str | None = None
    """The brand printed on the device (e.g. ``UTAX``, ``Gestetner``)."""
    manufacturer: str | None = None
    """The company that built it (``Kyocera`` for UTAX, ``Ricoh`` for Gestetner)."""
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    mac: str | None = None
    ip: str | None = None
    hostname: str | None = None
    sys_descr: str | None = None
    sys_name: str | None = None
    sys_location: str | None = None
    sys_contact: str | None = None
    sys_object_id: str | None = None
    uptime_s: int | None = None
    device_kind: Literal["printer", "mfp", "label-printer", "scanner", "unknown"] = "unknown"


class CoarseState(StrEnum):
    """What is known about a level when no percentage can honestly be given."""

    OK = "ok"
    LOW = "low"
    EMPTY = "empty"
    SOME_REMAINING = "some-remaining"
    ALMOST_FULL = "almost-full"
    FULL = "full"
    UNKNOWN = "unknown"


class Tray(_Model):
    """An input tray (prtInputTable) with honest capacity/level handling."""

    index: int
    name: str | None = None
    media: str | None = None
    capacity: int | None = None
    level: int | None = None
    level_percent: float | None = None
    state: CoarseState = CoarseState.UNKNOWN
    raw_level: int | None = None
    raw_capacity: int | None = None


class OutputBin(_Model):
    """An output bin (prtOutputTable)."""

    index: int
    name: str | None = None
    capacity: int | None = None
    raw_remaining: int | None = None
    state: CoarseState = CoarseState.UNKNOWN


class Capabilities(_Model):
    """What the device can do, as far as it told us (``None`` = not reported)."""

    colour: bool | None = None
    duplex: bool | None = None
    marker_technology: str | None = None
    colorants: list[str] = Field(default_factory=list)
    trays: list[Tray] = Field(default_factory=list)
    output_bins: list[OutputBin] = Field(default_factory=list)


CounterUnit = Literal[
    "impressions", "sheets", "pages", "clicks", "meters", "feet", "square-meters", "images",
    "other", "unknown",
]


class Counter(_Model):
    """One normalised counter.

    ``name`` follows PWG 5106.1 (service × colour × work type): ``total``, ``mono``,
    ``colour``, ``print_total``, ``print_mono``, ``print_colour``, ``copy_total``,
    ``copy_mono``, ``copy_colour``, ``fax_total``, ``scan_total``, ``duplex``, ….
    ``source`` names the OID and the profile rule the value came from.
    """

    name: str
    value: int = Field(ge=0)
    unit: CounterUnit = "impressions"
    source: str
    width: Literal[32, 64] | None = None
    """Bit width when the value is an SNMP Counter32/Counter64 that wraps; the
    server uses it to compute usage across a wrap (see :func:`counter_delta`)."""


class RawCounter(_Model):
    """A vendor counter kept as the device gave it, before any mapping."""

    key: str
    value: int
    oid: str
    profile: str
    label: str | None = None


SupplyClass = Literal["consumed", "receptacle", "other", "unknown"]


class Supply(_Model):
    """One row of prtMarkerSuppliesTable, or a vendor equivalent."""

    index: int | str
    class_: SupplyClass = Field("unknown", alias="class")
    type: str = "unknown"
    """IANA PrtMarkerSuppliesTypeTC name, e.g. ``toner``, ``wasteToner``, ``opc``."""
    colour: str | None = None
    """From prtMarkerColorantTable via prtMarkerSuppliesColorantIndex, not row order."""
    description: str | None = None
    level_percent: float | None = Field(None, ge=0, le=100)
    state: CoarseState = CoarseState.UNKNOWN
    raw_level: int | None = None
    raw_max: int | None = None
    unit: str | None = None
    part_number: str | None = None
    serial: str | None = None

    @model_validator(mode="after")
    def _percent_needs_real_numbers(self) -> Supply:
        if self.level_percent is not None and (
            self.raw_level is None or self.raw_max is None or self.raw_level < 0
            or self.raw_max <= 0
        ):
            raise ValueError("level_percent needs a real raw_level and a positive raw_max")
        return self


AlertSeverity = Literal["other", "critical", "warning", "warningBinaryChangeEvent", "unknown"]


class Alert(_Model):
    """One active alert: a prtAlertTable row or a decoded error-state bit."""

    source: Literal["prtAlertTable", "hrPrinterDetectedErrorState", "vendor"]
    severity: AlertSeverity
    code: str
    """IANA PrtAlertCodeTC name (``tonerLow``, ``jammed``…) or the error-state bit name."""
    index: int | None = None
    training_level: str | None = None
    group: str | None = None
    group_index: int | None = None
    location: int | None = None
    description: str | None = None
    time_ticks: int | None = None
    """prtAlertTime: sysUpTime (hundredths of a second) when the alert was raised."""


class Status(_Model):
    """The device's overall condition (Host Resources MIB + console)."""

    device_status: str | None = None
    """hrDeviceStatus name: unknown, running, warning, testing, down."""
    printer_status: str | None = None
    """hrPrinterStatus name: other, unknown, idle, printing, warmup."""
    error_state_raw: str | None = None
    """hrPrinterDetectedErrorState octets as hex, as received."""
    error_flags: list[str] = Field(default_factory=list)
    console_text: list[str] = Field(default_factory=list)


MissingReason = Literal[
    "not-supported", "timeout", "no-profile-rule", "invalid-value", "error",
]


class Missing(_Model):
    """A field the device did not give, and why."""

    field: str
    reason: MissingReason
    detail: str | None = None


class ProfileMatch(_Model):
    """Which device profile was used, and why it won."""

    name: str
    chain: list[str] = Field(default_factory=list)
    reason: str


class Reading(_Model):
    """A complete, honest snapshot of one device at one moment."""

    schema_: Literal["fleetroom.reading/1"] = Field("fleetroom.reading/1", alias="schema")
    taken_at: datetime
    duration_ms: Annotated[int, Field(ge=0)] = 0
    target: str
    """The address as polled (host[:port]); identity.ip holds the resolved IP."""
    snmp_version: Literal["1", "2c", "3"]
    credential: str | None = None
    """Name of the credential set that worked; never the secret itself."""
    profile: ProfileMatch | None = None
    identity: Identity = Field(default_factory=Identity)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    counters: list[Counter] = Field(default_factory=list)
    raw_counters: list[RawCounter] = Field(default_factory=list)
    supplies: list[Supply] = Field(default_factory=list)
    alerts: list[Alert] = Field(default_factory=list)
    status: Status = Field(default_factory=Status)
    missing: list[Missing] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)

    def counter(self, name: str) -> int | None:
        """The value of the normalised counter ``name``, or ``None`` when absent."""
        for c in self.counters:
            if c.name == name:
                return c.value
        return None

    def to_json(self) -> str:
        """Wire JSON: aliases (``schema``, ``class``), no ``None`` padding stripped."""
        return self.model_dump_json(by_alias=True)


def counter_delta(old: int, new: int, width: int | None) -> int | None:
    """Usage between two readings of a cumulative counter.

    A Counter32 that passed 2**32 starts again near zero; the true usage is then
    ``new + 2**32 - old``.  We accept that reading only when it is plausible (less
    than a quarter of the counter's range), because a smaller value can also mean
    the device was replaced or its counter reset, which must not be billed as
    billions of pages.  ``None`` means "not a usage; investigate".
    """
    if new >= old:
        return new - old
    if width is None:
        return None
    wrapped = new + (1 << width) - old
    return wrapped if wrapped < (1 << width) // 4 else None

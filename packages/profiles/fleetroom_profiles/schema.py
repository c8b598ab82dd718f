"""The device profile schema: what a profile YAML file may say.

A profile is data, like docuFORM's PMD files: it can be updated without a new
agent release.  Python holds only the meaning of the standard MIB tables (the
``collect`` names) and registered decoders for opaque packed vendor values.

Every rule that reads an OID carries ``source``: where that OID is documented (an
RFC, a vendor MIB, or a named public source).  A rule without a source fails
validation, so no OID enters the product without a reason to trust it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

_OID_RE = re.compile(r"^\.?[0-2](\.\d+)+$")


def _check_oid(value: str) -> str:
    if not _OID_RE.match(value):
        raise ValueError(f"not a numeric OID: {value!r}")
    return value.lstrip(".")


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"bad regular expression {value!r}: {exc}") from exc
    return value


Oid = Annotated[str, AfterValidator(_check_oid)]
Regex = Annotated[str, AfterValidator(_check_regex)]
Source = Annotated[str, Field(min_length=3)]

IdentityField = Literal["vendor", "manufacturer", "model", "serial", "firmware", "mac"]
DeviceKind = Literal["printer", "mfp", "label-printer", "scanner"]
CounterUnit = Literal[
    "impressions", "sheets", "pages", "clicks", "meters", "feet", "square-meters", "images",
    "other",
]

StandardCollector = Literal[
    "system",  # SNMPv2-MIB system group
    "interfaces-mac",  # first non-zero ifPhysAddress
    "hr-device",  # hrDeviceTable: printer row, descr, status
    "hr-printer",  # hrPrinterStatus, hrPrinterDetectedErrorState
    "printer-general",  # prtGeneralSerialNumber, printer name, alert event counters
    "printer-markers",  # prtMarkerTable: life count, technology, colorants count
    "printer-supplies",  # prtMarkerSuppliesTable + prtMarkerColorantTable
    "printer-inputs",  # prtInputTable
    "printer-outputs",  # prtOutputTable
    "printer-media-paths",  # prtMediaPathTable (duplex capability)
    "printer-alerts",  # prtAlertTable
    "printer-console",  # prtConsoleDisplayBufferTable
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchRule(_Strict):
    """One way to recognise a device; all given conditions must hold.

    ``sysobjectid`` is a prefix on arc boundaries (``1.3.6.1.4.1.367`` matches
    ``1.3.6.1.4.1.367.1.1`` but not ``1.3.6.1.4.1.3670``).  ``sysdescr`` is a
    regular expression searched in sysDescr.
    """

    sysobjectid: Oid | None = None
    sysdescr: Regex | None = None

    @model_validator(mode="after")
    def _needs_a_condition(self) -> MatchRule:
        if self.sysobjectid is None and self.sysdescr is None:
            raise ValueError("a match rule needs sysobjectid and/or sysdescr")
        return self


class ValueRule(_Strict):
    """Where one identity value comes from: exactly one of ``oid``, ``sysdescr``, ``value``.

    ``regex`` (with a group named ``value``, or the first group) extracts part of
    the text; ``sysdescr`` is such a regex applied to sysDescr; ``value`` is a
    literal (for brand names, never for measurements).
    """

    oid: Oid | None = None
    sysdescr: Regex | None = None
    value: str | None = None
    regex: Regex | None = None
    source: Source

    @model_validator(mode="after")
    def _exactly_one_origin(self) -> ValueRule:
        given = [x for x in (self.oid, self.sysdescr, self.value) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of oid, sysdescr, value")
        if self.regex is not None and self.oid is None:
            raise ValueError("regex applies to an oid's text; for sysDescr use sysdescr")
        return self


class CounterRule(_Strict):
    """A scalar counter OID mapped to a normalised name (PWG 5106.1 style)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    oid: Oid
    unit: CounterUnit = "impressions"
    source: Source


class CounterTable(_Strict):
    """A vendor table of numbered counters (Canon, Sharp, Konica…).

    The table is walked under ``root``; a row is ``root.<column>.<index…>``.  The
    key of a row is its index (``key: index``) or the text in ``key_column``.
    ``map`` turns keys into normalised names; every row is also kept as a raw
    vendor counter so nothing the device says is thrown away.
    """

    root: Oid
    value_column: int = Field(ge=1)
    key: Literal["index", "column"] = "index"
    key_column: int | None = Field(None, ge=1)
    label_column: int | None = Field(None, ge=1)
    map: dict[str, Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = Field(
        default_factory=dict)
    unit: CounterUnit = "impressions"
    source: Source

    @model_validator(mode="after")
    def _key_column_given(self) -> CounterTable:
        if self.key == "column" and self.key_column is None:
            raise ValueError("key: column needs key_column")
        return self


class DecoderRule(_Strict):
    """An OID whose value is packed (e.g. Brother's counter blob) and a registered decoder."""

    oid: Oid
    decoder: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    source: Source


class Profile(_Strict):
    """One profile file.  ``extends`` names parents; the child's rules win."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    description: str = ""
    extends: list[str] = Field(default_factory=list)
    abstract: bool = False
    """Abstract profiles hold shared rules and are never chosen for a device themselves."""
    match: list[MatchRule] = Field(default_factory=list)
    device_kind: DeviceKind | None = None
    identity: dict[IdentityField, list[ValueRule]] = Field(default_factory=dict)
    """One rule, or a list tried in order (e.g. a vendor OID, then the sysDescr)."""
    collect: list[StandardCollector] = Field(default_factory=list)
    counters: list[CounterRule] = Field(default_factory=list)
    counter_tables: list[CounterTable] = Field(default_factory=list)
    decoders: list[DecoderRule] = Field(default_factory=list)
    status_oids: list[Oid] = Field(default_factory=list)
    """OIDs for the cheap "has anything changed?" cycle, read in one PDU."""

    @field_validator("identity", mode="before")
    @classmethod
    def _single_rule_is_a_list(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _concrete_needs_match(self) -> Profile:
        if not self.abstract and not self.match:
            raise ValueError("a profile that is not abstract needs at least one match rule")
        names = [c.name for c in self.counters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"counter names given twice: {', '.join(dupes)}")
        return self

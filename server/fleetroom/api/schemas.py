"""Request and response shapes of the API (pydantic, through ninja's ``Schema``).

Responses are built explicitly from model rows by the ``*_out`` functions in the
endpoint modules rather than by ``from_attributes`` magic, so what leaves the
server is exactly what is listed here and no lazy query runs while rendering.

Inputs are bounded (lengths, ranges, time-zone-aware times inside the years a
database can store, no NUL or lone surrogate characters) so that any request the
schema admits can be answered, on SQLite and on PostgreSQL — which refuses NUL in
text — instead of ending in a server error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from ninja import Schema
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StringConstraints

from . import conf

INT64_MAX = (1 << 63) - 1
MAX_OFFSET = 1_000_000_000
MAX_LIMIT = 500
DEFAULT_LIMIT = 50


def _storable_text(value: str) -> str:
    """Refuse what no database column can hold: NUL and unpaired surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _iso_time_only(value: object) -> object:
    """Refuse what pydantic would otherwise read as seconds since 1970 (``since=0.5``):
    the schema promises an ISO 8601 time, and a number there is a client's mistake."""
    if isinstance(value, int | float):
        raise ValueError("must be an ISO 8601 time, e.g. 2025-01-31T12:00:00Z")
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("must be an ISO 8601 time, e.g. 2025-01-31T12:00:00Z")
    return value


def _storable_time(value: datetime) -> datetime:
    """The time in UTC; one beyond what UTC can express (year 1 with a positive offset,
    year 9999 with a negative one) is clamped to the nearest end, which is what a
    filter at that edge means anyway."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        return (datetime.min if value.year < 5000 else datetime.max).replace(tzinfo=UTC)


NO_NUL = r"^[^\x00]*$"
"""JSON-schema pattern: no NUL characters (PostgreSQL cannot store them)."""
TOKEN_NAME = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"  # noqa: S105 - a pattern, not a secret
"""JSON-schema pattern: some visible character, no control characters."""


Text = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL),
                 AfterValidator(_storable_text)]
"""A free-text filter (search words, names)."""
Time = Annotated[AwareDatetime, BeforeValidator(_iso_time_only),
                 AfterValidator(_storable_time)]
"""An ISO 8601 time with a time zone (``2025-01-31T12:00:00Z``)."""
Id = Annotated[int, Field(ge=1, le=INT64_MAX)]
"""A database id."""


class Page(Schema):
    """The paging part of every list: ``count`` is the total of all pages."""

    count: int = Field(description="Number of items matching the filters, on all pages.")
    limit: int
    offset: int


class PageParams(Schema):
    """``limit`` and ``offset`` of every list."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT,
                       description=f"Items per page (1–{MAX_LIMIT}).")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Items to skip.")


class ValidationIssue(Schema):
    """One reason a request was refused with 422."""

    loc: list[str | int] = Field(description="Where: e.g. ['query', 'limit'].")
    msg: str
    type: str


class ErrorOut(Schema):
    """Every error answer: a sentence for people and a stable code for programs."""

    detail: str = Field(description="What went wrong, in the request's language.")
    code: str = Field(description="Stable machine-readable reason, e.g. 'not_found'.")
    errors: list[ValidationIssue] | None = Field(
        None, description="For 422: each invalid field and why.")


# --- tenants ---------------------------------------------------------------------------

TenantKindName = Literal["operator", "dealer", "customer", "site", "location"]


class TenantRef(Schema):
    """A tenant node, as other objects point at it."""

    id: int
    kind: TenantKindName
    name: str


class SiteOut(TenantRef):
    """A node of the tenant tree that the token's user may see."""

    parent_id: int | None = Field(
        description="The parent node, or null when it is the root or outside your access.")
    depth: int = Field(description="0 for the platform operator, 1 for dealers, …")


class SitePage(Page):
    """A page of tenant nodes."""

    items: list[SiteOut]


class SiteFilters(Schema):
    """Filters of the site list."""

    kind: TenantKindName | None = Field(None, description="Only nodes of this kind.")
    parent: Id | None = Field(None, description="Only direct children of this node.")
    q: Text | None = Field(None, description="Part of the name.")


# --- devices ---------------------------------------------------------------------------

DeviceStatusName = Literal["ok", "warning", "error", "not_reporting", "unknown"]
DeviceOrdering = Literal["id", "-id", "serial", "-serial", "last_seen", "-last_seen",
                         "status", "-status", "ip", "-ip"]


class DeviceModelOut(Schema):
    """Make and model, with what devices of it reported they can do (null = not reported)."""

    manufacturer: str
    name: str
    is_colour: bool | None
    has_duplex: bool | None
    marker_technology: str


class DeviceOut(Schema):
    """A device as listed.  Text fields are ``""`` when the device never reported them."""

    id: int
    manufacturer: str
    vendor: str = Field(description="The brand printed on the device.")
    model: DeviceModelOut | None
    serial: str
    identity_weak: bool = Field(description="True when told apart without a serial number.")
    device_kind: str
    ip: str
    mac: str
    hostname: str
    firmware: str
    sys_name: str
    sys_location: str
    asset_number: str
    cost_centre: str
    tags: list[str]
    tenant: TenantRef = Field(description="The site (or customer) the device belongs to.")
    location: TenantRef | None
    status: DeviceStatusName
    status_changed_at: datetime | None
    first_seen: datetime
    last_seen: datetime = Field(description="When its newest reading was taken.")


class CounterOut(Schema):
    """One cumulative counter of a reading (PWG 5106.1 names: total, mono, colour, …)."""

    name: str
    value: int
    unit: str
    width: int | None = Field(description="Bit width of an SNMP counter that wraps.")
    delta: int | None = Field(
        description="Usage since the previous reading; null when it cannot honestly be given.")


class SupplyOut(Schema):
    """One supply of a reading; ``level_percent`` only when the device gave a real level."""

    index: str
    supply_class: str = Field(description="consumed, receptacle, other or unknown.")
    type: str = Field(description="IANA PrtMarkerSuppliesTypeTC name, e.g. toner.")
    colour: str
    description: str
    part_number: str
    level_percent: float | None
    state: str = Field(description="What is known when no percentage can be given.")
    raw_level: int | None
    raw_max: int | None
    unit: str


class AlertOut(Schema):
    """One occurrence of an alert, open until a later complete reading no longer lists it."""

    id: int
    device_id: int
    source: str
    severity: str
    code: str
    description: str
    alert_index: int | None
    group: str
    group_index: int | None
    location: int | None
    training_level: str
    opened_at: datetime
    last_seen_at: datetime
    closed_at: datetime | None
    is_open: bool


class DeviceDetailOut(DeviceOut):
    """A device with its current state: newest counters and supplies, open alerts."""

    device_status: str = Field(description="hrDeviceStatus of the newest reading.")
    printer_status: str = Field(description="hrPrinterStatus of the newest reading.")
    error_state_raw: str
    last_reading_id: int | None
    counters: list[CounterOut] = Field(description="From the newest reading.")
    supplies: list[SupplyOut] = Field(description="From the newest reading.")
    open_alerts: list[AlertOut]


class DevicePage(Page):
    """A page of devices."""

    items: list[DeviceOut]


class DeviceFilters(Schema):
    """Filters and order of the device list."""

    q: Text | None = Field(None, description="Search serial, host name, IP, MAC, system "
                                             "name, asset number, manufacturer and model.")
    status: DeviceStatusName | None = None
    tenant: Id | None = Field(None, description="Only devices at this node or below it "
                                                "(a dealer, customer, site or location).")
    manufacturer: Text | None = Field(None, description="Exact manufacturer (any case).")
    device_kind: Literal["printer", "mfp", "label-printer", "scanner", "unknown"] | None = None
    ordering: DeviceOrdering = Field("id", description="Sort key; '-' for descending.")


# --- readings --------------------------------------------------------------------------

class ReadingOut(Schema):
    """One reading (snapshot) of a device, with its counters and supplies."""

    id: int
    device_id: int
    taken_at: datetime
    received_at: datetime
    snmp_version: str
    profile: str
    target: str
    duration_ms: int
    identity_weak: bool
    counters: list[CounterOut]
    supplies: list[SupplyOut]


class ReadingPage(Page):
    """A page of readings, newest first."""

    items: list[ReadingOut]


class ReadingFilters(Schema):
    """Time window of the readings list."""

    since: Time | None = Field(None, description="Only readings taken at or after this time.")
    until: Time | None = Field(None, description="Only readings taken before this time.")


# --- alerts ----------------------------------------------------------------------------

AlertSeverityName = Literal["other", "critical", "warning", "warningBinaryChangeEvent",
                            "unknown"]


class AlertPage(Page):
    """A page of alerts, newest first."""

    items: list[AlertOut]


class AlertFilters(Schema):
    """Filters of the alert list."""

    state: Literal["open", "closed", "all"] = Field(
        "open", description="open (default), closed, or all (recent history).")
    device: Id | None = Field(None, description="Only this device's alerts.")
    severity: AlertSeverityName | None = None
    since: Time | None = Field(None, description="Only alerts opened at or after this time.")


# --- tokens ----------------------------------------------------------------------------

TokenStateName = Literal["active", "expired", "revoked"]


class TokenOut(Schema):
    """An API token as its owner sees it after creation: never the secret."""

    id: int
    key_id: str = Field(description="The non-secret middle part of the token.")
    name: str
    created_via: Literal["api", "web"]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    state: TokenStateName
    revoked_at: datetime | None
    revoked_reason: str


class TokenCreatedOut(TokenOut):
    """A new token.  ``token`` is shown this once; store it like a password."""

    token: str = Field(description="Send as 'Authorization: Bearer <token>'.")


class TokenCreateIn(Schema):
    """Credentials and the new token's name and lifetime."""

    login: Annotated[str, StringConstraints(min_length=1, max_length=254, pattern=NO_NUL),
                     AfterValidator(_storable_text)] = Field(
        description="User name or e-mail address.")
    password: Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_NUL),
                        AfterValidator(_storable_text)]
    code: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL),
                    AfterValidator(_storable_text)] | None = Field(
        None, description="Current TOTP code or a recovery code, when the account uses "
                          "two-factor authentication.")
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=TOKEN_NAME),
                    AfterValidator(_storable_text)] = Field(
        description="What the token is for, so you recognise it in the list.")
    expires_in_days: int | None = Field(
        None, ge=1, le=conf.token_max_days(),
        description=f"Lifetime in days (default {conf.token_default_days()}).")


class TokenPage(Page):
    """A page of the caller's own tokens, newest first."""

    items: list[TokenOut]

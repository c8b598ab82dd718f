"""Devices and their readings, shaped for millions of rows.

Write only through :mod:`fleetroom.fleet.services`; read through
:mod:`fleetroom.fleet.selectors` and the tenant scope (every model here declares
``tenant_field`` and uses :class:`~fleetroom.core.scoping.ScopedManager`).

Design, and why:

* **Identity is global** (architecture rule 2): one ``Device`` row per physical
  device, keyed by ``identity_key`` = normalised manufacturer + serial, unique over
  the whole installation.  A printer that is resold to another customer is the same
  printer, so it *moves* (``DeviceEvent`` ``moved``) instead of being duplicated —
  within its dealer; another dealer's agent reporting it is refused, so that no
  dealer can take another's device by quoting its serial (the operator moves it).
  Devices without a usable serial cannot be told apart across networks, so their
  key is scoped to the tenant that reported them (MAC, else address) and they are
  flagged ``identity_weak``; see :mod:`fleetroom.fleet.identity`.
* **No denormalised tenant path on Device.**  The scope filter is
  ``tenant_id IN (SELECT id FROM tenant WHERE path LIKE …)``: a prefix scan on the
  small tenant table and the ``tenant_id`` index here.  A copied path would have to
  be rewritten on every tree move, and a stale copy would be a scoping leak.
* **Every time-series row carries ``tenant``** (the tenant whose agent reported it,
  not the device's current one): when a device moves, its history stays visible to
  the tenant that produced it and to nobody else.  Those foreign keys are
  ``DO_NOTHING`` without an index: the database constraint still refuses deleting a
  tenant that has rows, without Django scanning millions of rows first.
* **Readings** are snapshots: a small header (unique per device and ``taken_at``: the
  idempotency key) plus child rows per counter and supply.  The complete protocol
  reading is kept zlib-compressed in ``payload`` for re-normalisation and forensics;
  the database never queries it.
* **Alerts** are one row per occurrence (open → closed), not one per reading;
  **status** is a change log (a row when the summary changes), not one per reading.
* **Retention tiers**: raw readings (header, counters, supplies, payload) live
  ``FLEETROOM_FLEET_RAW_RETENTION_DAYS``; :class:`CounterDaily` (first/last value and
  usage per device, counter and UTC day) lives forever.  A device's last reading is
  never pruned.
"""

from __future__ import annotations

from typing import ClassVar, Self

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from fleetroom.core.scoping import ScopedManager
from fleetroom.tenancy.models import Tenant


class DeviceStatus(models.TextChoices):
    """The one-word summary shown on dashboards, computed at ingest."""

    OK = "ok", _("OK")
    WARNING = "warning", _("Warning")
    ERROR = "error", _("Error")
    NOT_REPORTING = "not_reporting", _("Not reporting")
    UNKNOWN = "unknown", _("Unknown")


SUPPLY_ATTENTION_STATES: tuple[str, ...] = ("empty", "full", "low", "almost-full")
"""Supply states that need someone: the agent's own verdict (consumables low/empty,
receptacles almost full/full, see ``fleetroom_protocol.CoarseState``), so no second
threshold is invented on the server."""


class IdentityKind(models.TextChoices):
    """What ``Device.identity_key`` is made of."""

    SERIAL = "serial", _("Manufacturer and serial number")
    MAC = "mac", _("MAC address within the tenant")
    ADDRESS = "address", _("Network address within the tenant")


class EventKind(models.TextChoices):
    """Things that happened to a device that a person may need to look at."""

    CREATED = "created", _("First seen")
    MOVED = "moved", _("Moved to another tenant")
    SERIAL_CHANGED = "serial_changed", _("Serial number changed at the same address")
    IDENTITY_UPGRADED = "identity_upgraded", _("Serial number learnt")
    FIRMWARE_CHANGED = "firmware_changed", _("Firmware changed")
    COUNTER_WRAPPED = "counter_wrapped", _("Counter wrapped")
    COUNTER_RESET = "counter_reset", _("Counter went backwards")


class DeviceModel(models.Model):
    """A make and model, with what devices of it reported they can do.

    Capabilities are filled in from readings but never overwritten with "not
    reported": ``None`` means no device of this model has told us yet.
    """

    manufacturer = models.CharField(_("manufacturer"), max_length=100)
    name = models.CharField(_("model"), max_length=200)
    manufacturer_key = models.CharField(_("manufacturer key"), max_length=100, editable=False)
    name_key = models.CharField(_("model key"), max_length=200, editable=False)
    device_kind = models.CharField(_("device kind"), max_length=16, default="unknown")
    is_colour = models.BooleanField(_("colour"), null=True, blank=True)
    has_duplex = models.BooleanField(_("duplex"), null=True, blank=True)
    marker_technology = models.CharField(_("marking technology"), max_length=64, blank=True)
    colorants = models.JSONField(_("colorants"), default=list, blank=True)
    """list[str], validated by :data:`fleetroom.fleet.schemas.STRING_LIST`."""
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    # Not tenant data: a model is a fact about hardware, shared by every tenant.
    objects: ClassVar[models.Manager[DeviceModel]] = models.Manager()

    class Meta:
        verbose_name = _("device model")
        verbose_name_plural = _("device models")
        constraints = [
            models.UniqueConstraint(fields=["manufacturer_key", "name_key"],
                                    name="fleet_devicemodel_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.manufacturer} {self.name}"


class Tag(models.Model):
    """A free label a tenant puts on its devices (portable M2M, no database arrays)."""

    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="device_tags")
    name = models.CharField(_("name"), max_length=64)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="fleet_tag_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Device(models.Model):
    """One physical printer, MFP or scanner.

    Text attributes are the last known values (``""`` = never reported): a reading
    that lacks a field does not erase what an earlier one said, and each reading's
    own snapshot stays in its payload.
    """

    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="devices",
                               help_text=_("The site, or the customer when it has no sites."))
    location = models.ForeignKey(Tenant, verbose_name=_("location"), null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="located_devices")
    identity_key = models.CharField(_("identity key"), max_length=300, unique=True,
                                    editable=False)
    identity_kind = models.CharField(_("identified by"), max_length=8,
                                     choices=IdentityKind.choices, editable=False)
    identity_weak = models.BooleanField(
        _("weak identity"), default=False, editable=False,
        help_text=_("No serial number: told apart by MAC or address within its tenant only."))
    manufacturer = models.CharField(_("manufacturer"), max_length=100, blank=True)
    serial = models.CharField(_("serial number"), max_length=128, blank=True)
    vendor = models.CharField(_("brand"), max_length=100, blank=True)
    model = models.ForeignKey(DeviceModel, verbose_name=_("model"), null=True, blank=True,
                              on_delete=models.PROTECT, related_name="devices")
    device_kind = models.CharField(_("device kind"), max_length=16, default="unknown")
    ip = models.CharField(_("IP address"), max_length=64, blank=True)
    mac = models.CharField(_("MAC address"), max_length=64, blank=True)
    hostname = models.CharField(_("host name"), max_length=255, blank=True)
    firmware = models.CharField(_("firmware"), max_length=200, blank=True)
    sys_name = models.CharField(_("system name"), max_length=255, blank=True)
    sys_location = models.TextField(_("location reported by the device"), blank=True)
    tags = models.ManyToManyField(Tag, verbose_name=_("tags"), blank=True,
                                  related_name="devices")
    asset_number = models.CharField(_("asset number"), max_length=64, blank=True)
    cost_centre = models.CharField(_("cost centre"), max_length=64, blank=True)
    first_seen = models.DateTimeField(_("first seen"))
    last_seen = models.DateTimeField(_("last seen"))
    """``taken_at`` of the newest reading; only a newer reading changes current state.

    Deliberately not indexed, like ``last_reading``: both change with every reading,
    and each index on them would be rewritten every time (on PostgreSQL it also rules
    out HOT updates).  Their readers — the not-reporting sweep every few minutes and
    pruning — scan the device table, which is small next to the readings."""
    last_reading = models.ForeignKey("Reading", verbose_name=_("last reading"), null=True,
                                     blank=True, on_delete=models.SET_NULL, related_name="+",
                                     db_index=False)
    status = models.CharField(_("status"), max_length=16, choices=DeviceStatus.choices,
                              default=DeviceStatus.UNKNOWN)
    status_changed_at = models.DateTimeField(_("status changed at"), null=True, blank=True)
    device_status = models.CharField(_("hrDeviceStatus"), max_length=32, blank=True)
    printer_status = models.CharField(_("hrPrinterStatus"), max_length=32, blank=True)
    error_state_raw = models.CharField(_("error state (hex)"), max_length=64, blank=True)
    supplies_attention = models.PositiveSmallIntegerField(
        _("supplies needing attention"), default=0,
        help_text=_("Supplies of the newest reading that are low, empty, almost full or full."))
    """A current-state summary like ``status``, kept by ingest from the newest reading's
    supply states (:data:`SUPPLY_ATTENTION_STATES`).  Without it the dashboard and the
    list's supply filter had to open every device's newest reading: one index probe
    per device into the largest table (measured ~50–100 ms at 10,000 devices)."""
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("device")
        verbose_name_plural = _("devices")
        indexes = [
            # Fallback identity and the serial-change check look devices up by
            # MAC or address inside one tenant.
            models.Index(fields=["tenant", "mac"], name="fleet_device_tenant_mac"),
            models.Index(fields=["tenant", "ip"], name="fleet_device_tenant_ip"),
        ]

    def __str__(self) -> str:
        label = self.model.name if self.model_id and self.model else self.vendor or "?"
        return f"{label} {self.serial or self.mac or self.ip}"


class Reading(models.Model):
    """The header of one normalised reading; idempotency key ``(device, taken_at)``.

    A reading's identity is "device D as it was at instant T": the same snapshot
    arriving twice (a retried upload, a re-imported file, two transports) finds
    the row and changes nothing.
    """

    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               related_name="readings")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.DO_NOTHING,
                               db_index=False, related_name="+")
    taken_at = models.DateTimeField(_("taken at"))
    received_at = models.DateTimeField(_("received at"))
    agent_id = models.BigIntegerField(_("agent"), null=True, blank=True)
    """Future foreign key to agents.Agent (that app does not exist yet)."""
    snmp_version = models.CharField(_("SNMP version"), max_length=2)
    credential = models.CharField(_("credential set"), max_length=100, blank=True)
    profile = models.CharField(_("profile"), max_length=64, blank=True)
    target = models.CharField(_("target"), max_length=255, blank=True)
    duration_ms = models.PositiveBigIntegerField(_("duration (ms)"), default=0)
    identity_weak = models.BooleanField(
        _("matched without serial"), default=False,
        help_text=_("The reading had no usable serial and was matched by MAC or address."))
    payload = models.BinaryField(_("reading as received (zlib JSON)"))

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("reading")
        verbose_name_plural = _("readings")
        constraints = [
            models.UniqueConstraint(fields=["device", "taken_at"],
                                    name="fleet_reading_unique_device_taken_at"),
        ]
        indexes = [models.Index(fields=["taken_at"], name="fleet_reading_taken_at")]

    def __str__(self) -> str:
        return f"{self.device_id} @ {self.taken_at:%Y-%m-%d %H:%M:%S}"


class CounterValue(models.Model):
    """One cumulative counter in one reading, as the device reported it.

    ``delta`` is the usage since the device's previous reading, computed with
    :func:`fleetroom_protocol.counter_delta` (Counter32/64 wraps included); ``None``
    when no usage can honestly be given (first value, a reset, a unit change, or a
    reading that arrived out of order).
    """

    reading = models.ForeignKey(Reading, verbose_name=_("reading"), on_delete=models.CASCADE,
                                related_name="counter_values")
    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               db_index=False, related_name="+")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.DO_NOTHING,
                               db_index=False, related_name="+")
    taken_at = models.DateTimeField(_("taken at"))
    name = models.CharField(_("counter"), max_length=64)
    value = models.BigIntegerField(_("value"))
    unit = models.CharField(_("unit"), max_length=16)
    width = models.PositiveSmallIntegerField(_("bit width"), null=True, blank=True)
    delta = models.BigIntegerField(_("usage since previous reading"), null=True, blank=True)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("counter value")
        verbose_name_plural = _("counter values")
        indexes = [
            # The per-device time series: one range scan per counter.
            models.Index(fields=["device", "name", "taken_at"], name="fleet_counter_series"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class SupplyLevel(models.Model):
    """One supply (toner, drum, waste box …) in one reading.

    ``level_percent`` only when the device gave a real level and capacity (rule 3);
    otherwise ``state`` says what is known and ``raw_level``/``raw_max`` keep the
    numbers as received (Printer-MIB sentinels -1/-2/-3 included).
    """

    reading = models.ForeignKey(Reading, verbose_name=_("reading"), on_delete=models.CASCADE,
                                related_name="supply_levels")
    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               db_index=False, related_name="+")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.DO_NOTHING,
                               db_index=False, related_name="+")
    taken_at = models.DateTimeField(_("taken at"))
    supply_index = models.CharField(_("index"), max_length=64)
    supply_class = models.CharField(_("class"), max_length=16)
    supply_type = models.CharField(_("type"), max_length=64)
    colour = models.CharField(_("colour"), max_length=64, blank=True)
    description = models.TextField(_("description"), blank=True)
    part_number = models.CharField(_("part number"), max_length=128, blank=True)
    level_percent = models.FloatField(_("level (%)"), null=True, blank=True)
    state = models.CharField(_("state"), max_length=16)
    raw_level = models.BigIntegerField(_("raw level"), null=True, blank=True)
    raw_max = models.BigIntegerField(_("raw capacity"), null=True, blank=True)
    unit = models.CharField(_("unit"), max_length=32, blank=True)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("supply level")
        verbose_name_plural = _("supply levels")
        indexes = [models.Index(fields=["device", "taken_at"], name="fleet_supply_series")]

    def __str__(self) -> str:
        return f"{self.supply_type} {self.colour} {self.level_percent or self.state}"


class AlertRecord(models.Model):
    """One occurrence of an alert: opened when first seen, closed when a later,
    complete reading no longer lists it.

    ``closed_at`` is the ``taken_at`` of the first reading without it and
    ``last_seen_at`` of the last reading with it: the alert cleared in between.
    """

    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               related_name="alert_records")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="+")
    key = models.CharField(_("alert key"), max_length=255, editable=False)
    """source:code:index:group:group_index — what makes two readings' alerts the same."""
    source = models.CharField(_("source"), max_length=32)
    severity = models.CharField(_("severity"), max_length=32)
    code = models.CharField(_("code"), max_length=100)
    alert_index = models.BigIntegerField(_("index"), null=True, blank=True)
    group = models.CharField(_("group"), max_length=64, blank=True)
    group_index = models.BigIntegerField(_("group index"), null=True, blank=True)
    location = models.BigIntegerField(_("location"), null=True, blank=True)
    training_level = models.CharField(_("training level"), max_length=32, blank=True)
    description = models.TextField(_("description"), blank=True)
    time_ticks = models.BigIntegerField(_("raised at (sysUpTime)"), null=True, blank=True)
    opened_at = models.DateTimeField(_("opened at"))
    last_seen_at = models.DateTimeField(_("last seen at"))
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        constraints = [
            # At most one open occurrence per device and alert; also the index that
            # finds a device's open alerts (partial on both databases).
            models.UniqueConstraint(fields=["device", "key"],
                                    condition=Q(closed_at__isnull=True),
                                    name="fleet_alert_one_open_per_key"),
        ]
        indexes = [
            models.Index(fields=["device", "opened_at"], name="fleet_alert_history"),
            # "Recent alerts" in a scope: the newest per tenant straight from the
            # index (measured at 10,000 devices: 3 ms instead of reading and sorting
            # 50,000 rows).  Beside the tenant key's own index rather than replacing
            # it: dropping that one makes SQLite copy the whole table, and alert rows
            # are written seldom (one per occurrence), so the second index costs
            # ingest next to nothing.
            models.Index(fields=["tenant", "opened_at"], name="fleet_alert_tenant_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.code}"


class StatusSample(models.Model):
    """A change of a device's status (written only when something changed)."""

    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               db_index=False, related_name="status_samples")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="+")
    taken_at = models.DateTimeField(_("taken at"))
    status = models.CharField(_("status"), max_length=16, choices=DeviceStatus.choices)
    device_status = models.CharField(_("hrDeviceStatus"), max_length=32, blank=True)
    printer_status = models.CharField(_("hrPrinterStatus"), max_length=32, blank=True)
    error_state_raw = models.CharField(_("error state (hex)"), max_length=64, blank=True)
    error_flags = models.JSONField(_("error flags"), default=list, blank=True)
    """list[str], validated by :data:`fleetroom.fleet.schemas.STRING_LIST`."""

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("status change")
        verbose_name_plural = _("status changes")
        indexes = [models.Index(fields=["device", "taken_at"], name="fleet_status_series")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.status} @ {self.taken_at}"


class DeviceEvent(models.Model):
    """Something that happened to a device (identity change, move, counter wrap …)."""

    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               related_name="events")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="+")
    kind = models.CharField(_("kind"), max_length=32, choices=EventKind.choices)
    occurred_at = models.DateTimeField(_("occurred at"))
    reading = models.ForeignKey(Reading, verbose_name=_("reading"), null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="events")
    details = models.JSONField(_("details"), default=dict, blank=True)
    """Validated by :class:`fleetroom.fleet.schemas.EventDetails`."""

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("device event")
        verbose_name_plural = _("device events")
        indexes = [models.Index(fields=["device", "occurred_at"], name="fleet_event_history")]

    def __str__(self) -> str:
        return f"{self.kind} {self.device_id} @ {self.occurred_at}"


class CounterDaily(models.Model):
    """The long-term tier: one row per device, counter and UTC day, kept forever.

    ``usage`` sums the known per-reading deltas of that day (wraps included);
    ``samples_without_delta`` counts readings whose usage was unknown (first value,
    reset, unit change), so a report can say "at least" instead of guessing.
    """

    device = models.ForeignKey(Device, verbose_name=_("device"), on_delete=models.CASCADE,
                               db_index=False, related_name="+")
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.DO_NOTHING,
                               db_index=False, related_name="+")
    name = models.CharField(_("counter"), max_length=64)
    day = models.DateField(_("day (UTC)"))
    unit = models.CharField(_("unit"), max_length=16)
    first_value = models.BigIntegerField(_("first value"))
    first_at = models.DateTimeField(_("first reading"))
    last_value = models.BigIntegerField(_("last value"))
    last_at = models.DateTimeField(_("last reading"))
    usage = models.BigIntegerField(_("usage"), default=0)
    samples = models.PositiveIntegerField(_("readings"), default=0)
    samples_without_delta = models.PositiveIntegerField(_("readings without usage"), default=0)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("daily counter")
        verbose_name_plural = _("daily counters")
        constraints = [
            models.UniqueConstraint(fields=["device", "name", "day"],
                                    name="fleet_counterdaily_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.name} {self.day}"


class RollupCursor(models.Model):
    """How far the daily rollup got (one row per rollup kind); pruning never passes it."""

    name = models.CharField(_("name"), max_length=32, primary_key=True)
    rolled_through = models.DateField(_("rolled up through"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects: ClassVar[models.Manager[RollupCursor]] = models.Manager()

    class Meta:
        verbose_name = _("rollup cursor")
        verbose_name_plural = _("rollup cursors")

    def __str__(self) -> str:
        return f"{self.name}: {self.rolled_through}"

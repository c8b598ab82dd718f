"""The meaning of the standard MIB tables (the profile ``collect:`` names).

Each collector reads a :class:`DeviceSnapshot` and fills part of a
:class:`Reading`.  The OIDs are in :mod:`.oids`; which collectors run is data in
the profiles.  Nothing here guesses: an absent value stays absent and is listed
in ``missing`` by :mod:`.interpret`.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetroom_protocol import Alert, CoarseState, OutputBin, Reading, Supply, Tray

from ..snmp.types import SnmpValue
from . import enums, oids
from .snapshot import DeviceSnapshot
from .supplies import consumable_state, level_percent, receptacle_state, tray_state

SUPPLY_CLASS_RECEPTACLE = 4
SUPPLY_CLASS_CONSUMED = 3


def _int(v: SnmpValue | None) -> int | None:
    return None if v is None else v.as_int()


def _text(v: SnmpValue | None) -> str | None:
    if v is None:
        return None
    t = v.as_text()
    return t or None


def _sort_key(index: str) -> tuple[int, ...]:
    return tuple(int(p) for p in index.split(".") if p.isdigit())


def system(snap: DeviceSnapshot, r: Reading) -> None:
    """SNMPv2-MIB system group: descr, object id, name, location, contact, uptime."""
    ident = r.identity
    ident.sys_descr = snap.text(oids.SYS_DESCR)
    oid = snap.value(oids.SYS_OBJECT_ID)
    ident.sys_object_id = oid.as_text().lstrip(".") if oid is not None else None
    ident.sys_name = snap.text(oids.SYS_NAME)
    ident.sys_location = snap.text(oids.SYS_LOCATION)
    ident.sys_contact = snap.text(oids.SYS_CONTACT)
    ticks = snap.integer(oids.SYS_UPTIME)
    ident.uptime_s = ticks // 100 if ticks is not None and ticks >= 0 else None


def interfaces_mac(snap: DeviceSnapshot, r: Reading) -> None:
    """The first real 6-octet ifPhysAddress (loopback and zero addresses skipped)."""
    for _, v in sorted(snap.table(oids.IF_PHYS_ADDRESS.rsplit(".", 1)[0]).get(6, {}).items(),
                       key=lambda kv: _sort_key(kv[0])):
        if isinstance(v.value, bytes) and len(v.value) == 6 and any(v.value):
            r.identity.mac = ":".join(f"{b:02x}" for b in v.value)
            return


def printer_row(snap: DeviceSnapshot) -> str:
    """hrDeviceIndex of the printer: the first hrDevicePrinter row, else 1.

    Printer-MIB tables are indexed by this hrDeviceIndex, so everything else uses it.
    """
    types = snap.table(oids.HR_DEVICE_ENTRY).get(2, {})
    for index, v in sorted(types.items(), key=lambda kv: _sort_key(kv[0])):
        if v.as_text().lstrip(".") == oids.HR_DEVICE_PRINTER:
            return index
    return "1"


def hr_device(snap: DeviceSnapshot, r: Reading) -> None:
    """hrDeviceTable: status of the printer row; its description as a model fallback."""
    table = snap.table(oids.HR_DEVICE_ENTRY)
    row = printer_row(snap)
    status = _int(table.get(5, {}).get(row))
    if status is not None:
        r.status.device_status = enums.name_of(enums.HR_DEVICE_STATUS, status)


def hr_printer(snap: DeviceSnapshot, r: Reading) -> None:
    """hrPrinterStatus and hrPrinterDetectedErrorState, decoded bit by bit.

    Bit 0 is the most significant bit of the first octet (RFC 2790); each set bit
    also becomes an alert so a jam shows up even on devices without prtAlertTable.
    """
    table = snap.table(oids.HR_PRINTER_ENTRY)
    row = printer_row(snap)
    status = _int(table.get(1, {}).get(row))
    if status is not None:
        r.status.printer_status = enums.name_of(enums.HR_PRINTER_STATUS, status)
    err = table.get(2, {}).get(row)
    if err is not None and isinstance(err.value, bytes):
        r.status.error_state_raw = err.value.hex()
        flags = enums.decode_error_state(err.value)
        r.status.error_flags = flags
        for flag in flags:
            r.alerts.append(Alert(source="hrPrinterDetectedErrorState",
                                  severity=enums.error_state_severity(flag), code=flag))


def printer_general(snap: DeviceSnapshot, r: Reading) -> None:
    """prtGeneralTable: nothing to store beyond what identity rules read (serial).

    The table is walked so identity rules on prtGeneralSerialNumber and the status
    cycle's prtAlertAllEvents are answered from the walk without extra PDUs.
    """


def printer_markers(snap: DeviceSnapshot, r: Reading) -> None:
    """prtMarkerTable: marking technology, colour capability, and counter unit."""
    table = snap.table(oids.PRT_MARKER_ENTRY)
    row = printer_row(snap)
    first = sorted((i for i in table.get(2, {}) if i.split(".")[0] == row), key=_sort_key)
    if first:
        tech = _int(table[2][first[0]])
        if tech is not None:
            r.capabilities.marker_technology = enums.name_of(enums.MARKER_TECH, tech)
    colorants = [_int(v) for i, v in table.get(6, {}).items() if i.split(".")[0] == row]
    known = [c for c in colorants if c is not None and c > 0]
    if known:
        r.capabilities.colour = max(known) > 1


def counter_unit(snap: DeviceSnapshot, marker_index: str) -> str | None:
    """Our unit name for prtMarkerCounterUnit of ``marker_index`` (e.g. ``"1.1"``)."""
    v = snap.integer(f"{oids.PRT_MARKER_ENTRY}.3.{marker_index}")
    if v is None:
        return None
    return enums.COUNTER_UNIT_TO_OURS.get(v, "other")


_COLOUR_WORDS = (
    ("light cyan", "light cyan"), ("light magenta", "light magenta"),
    ("photo black", "photo black"), ("matte black", "matte black"),
    ("cyan", "cyan"), ("magenta", "magenta"), ("yellow", "yellow"), ("black", "black"),
    ("gelb", "yellow"), ("schwarz", "black"), ("grey", "gray"), ("gray", "gray"),
)


def colour_from_description(description: str | None) -> str | None:
    """The colour a supply's own description names ("Cyan Toner" → cyan).

    Used only when the device has no prtMarkerColorantTable at all: it is still
    the device's word, not a guess from row order.
    """
    if not description:
        return None
    text = f" {description.lower()} "
    for word, colour in _COLOUR_WORDS:
        if f" {word} " in text or text.startswith(f" {word}"):
            return colour
    return None


def printer_supplies(snap: DeviceSnapshot, r: Reading) -> None:
    """prtMarkerSuppliesTable joined to prtMarkerColorantTable.

    The colour comes from prtMarkerSuppliesColorantIndex → prtMarkerColorantValue,
    never from row order (many devices list black last, some list drums first).
    """
    sup = snap.table(oids.PRT_SUPPLIES_ENTRY)
    colorants = snap.table(oids.PRT_COLORANT_ENTRY).get(4, {})
    indexes: set[str] = set()
    for column in (4, 5, 6, 8, 9):
        indexes.update(sup.get(column, {}))
    for index in sorted(indexes, key=_sort_key):
        device_row, _, supply_index = index.partition(".")
        klass = _int(sup.get(4, {}).get(index))
        stype = _int(sup.get(5, {}).get(index))
        level = _int(sup.get(9, {}).get(index))
        capacity = _int(sup.get(8, {}).get(index))
        unit = _int(sup.get(7, {}).get(index))
        colour = None
        colorant_index = _int(sup.get(3, {}).get(index))
        if colorant_index is not None and colorant_index > 0:
            colour = _text(colorants.get(f"{device_row}.{colorant_index}"))
        description = _text(sup.get(6, {}).get(index))
        if colour is None and not colorants:
            colour = colour_from_description(description)
        type_name = enums.name_of(enums.SUPPLY_TYPES, stype) if stype is not None else "unknown"
        # Without prtMarkerSuppliesClass, a waste* type still says "receptacle" by itself.
        receptacle = klass == SUPPLY_CLASS_RECEPTACLE or (
            klass is None and type_name.startswith("waste"))
        state = (receptacle_state if receptacle else consumable_state)(level, capacity)
        r.supplies.append(Supply(
            index=int(supply_index) if supply_index.isdigit() else index,
            class_=("receptacle" if receptacle else "consumed" if klass == SUPPLY_CLASS_CONSUMED
                    else "other" if klass == 1 else "unknown"),
            type=type_name,
            colour=colour,
            description=description,
            level_percent=level_percent(level, capacity),
            state=state,
            raw_level=level,
            raw_max=capacity,
            unit=enums.name_of(enums.SUPPLY_UNITS, unit) if unit is not None else None,
        ))
    r.capabilities.colorants = sorted({
        t for v in colorants.values() if (t := _text(v)) is not None})


def printer_inputs(snap: DeviceSnapshot, r: Reading) -> None:
    """prtInputTable: trays with capacity and level (same sentinels as supplies)."""
    table = snap.table(oids.PRT_INPUT_ENTRY)
    indexes = set(table.get(9, {})) | set(table.get(13, {})) | set(table.get(10, {}))
    for index in sorted(indexes, key=_sort_key):
        level = _int(table.get(10, {}).get(index))
        capacity = _int(table.get(9, {}).get(index))
        tray_index = index.split(".")[-1]
        r.capabilities.trays.append(Tray(
            index=int(tray_index) if tray_index.isdigit() else 0,
            name=_text(table.get(13, {}).get(index)) or _text(table.get(18, {}).get(index)),
            media=_text(table.get(12, {}).get(index)),
            capacity=capacity if capacity is not None and capacity >= 0 else None,
            level=level if level is not None and level >= 0 else None,
            level_percent=level_percent(level, capacity),
            state=tray_state(level, capacity),
            raw_level=level,
            raw_capacity=capacity,
        ))


def printer_outputs(snap: DeviceSnapshot, r: Reading) -> None:
    """prtOutputTable: output bins; remaining capacity 0 means full."""
    table = snap.table(oids.PRT_OUTPUT_ENTRY)
    indexes = set(table.get(4, {})) | set(table.get(7, {}))
    for index in sorted(indexes, key=_sort_key):
        capacity = _int(table.get(4, {}).get(index))
        remaining = _int(table.get(5, {}).get(index))
        bin_index = index.split(".")[-1]
        r.capabilities.output_bins.append(OutputBin(
            index=int(bin_index) if bin_index.isdigit() else 0,
            name=_text(table.get(7, {}).get(index)),
            capacity=capacity if capacity is not None and capacity >= 0 else None,
            raw_remaining=remaining,
            state=receptacle_state(remaining, capacity) if remaining is not None
            else CoarseState.UNKNOWN,
        ))


def printer_media_paths(snap: DeviceSnapshot, r: Reading) -> None:
    """prtMediaPathType: a long- or short-edge duplex path means duplex capable."""
    types = [_int(v) for v in snap.table(oids.PRT_MEDIA_PATH_ENTRY).get(9, {}).values()]
    names = {enums.name_of(enums.MEDIA_PATH_TYPES, t) for t in types if t is not None}
    if names:
        r.capabilities.duplex = bool(names & {"longEdgeBindingDuplex", "shortEdgeBindingDuplex"})


def printer_alerts(snap: DeviceSnapshot, r: Reading) -> None:
    """prtAlertTable rows: the device's own list of active alerts."""
    table = snap.table(oids.PRT_ALERT_ENTRY)
    for index in sorted(table.get(7, {}) | table.get(2, {}), key=_sort_key):
        severity = _int(table.get(2, {}).get(index))
        code = _int(table.get(7, {}).get(index))
        group = _int(table.get(4, {}).get(index))
        training = _int(table.get(3, {}).get(index))
        sev_name = enums.name_of(enums.ALERT_SEVERITIES, severity) if severity else "unknown"
        r.alerts.append(Alert(
            source="prtAlertTable",
            severity=sev_name if sev_name in (
                "other", "critical", "warning", "warningBinaryChangeEvent") else "unknown",
            code=enums.name_of(enums.ALERT_CODES, code) if code is not None else "unknown",
            index=int(index.split(".")[-1]) if index.split(".")[-1].isdigit() else None,
            training_level=(enums.name_of(enums.ALERT_TRAINING_LEVELS, training)
                            if training is not None else None),
            group=enums.name_of(enums.ALERT_GROUPS, group) if group is not None else None,
            group_index=_int(table.get(5, {}).get(index)),
            location=_int(table.get(6, {}).get(index)),
            description=_text(table.get(8, {}).get(index)),
            time_ticks=_int(table.get(9, {}).get(index)),
        ))


def printer_console(snap: DeviceSnapshot, r: Reading) -> None:
    """prtConsoleDisplayBufferText: what the front panel shows right now."""
    rows = snap.table(oids.PRT_CONSOLE_TEXT.rsplit(".", 1)[0]).get(2, {})
    r.status.console_text = [t for _, v in sorted(rows.items(), key=lambda kv: _sort_key(kv[0]))
                             if (t := _text(v))]


COLLECTORS: dict[str, Callable[[DeviceSnapshot, Reading], None]] = {
    "system": system,
    "interfaces-mac": interfaces_mac,
    "hr-device": hr_device,
    "hr-printer": hr_printer,
    "printer-general": printer_general,
    "printer-markers": printer_markers,
    "printer-supplies": printer_supplies,
    "printer-inputs": printer_inputs,
    "printer-outputs": printer_outputs,
    "printer-media-paths": printer_media_paths,
    "printer-alerts": printer_alerts,
    "printer-console": printer_console,
}

WALKS: dict[str, tuple[str, ...]] = {
    "system": (),
    "interfaces-mac": (oids.IF_PHYS_ADDRESS,),
    "hr-device": (oids.HR_DEVICE_ENTRY,),
    "hr-printer": (oids.HR_PRINTER_ENTRY,),
    "printer-general": (oids.PRT_GENERAL_ENTRY,),
    "printer-markers": (oids.PRT_MARKER_ENTRY,),
    "printer-supplies": (oids.PRT_SUPPLIES_ENTRY, oids.PRT_COLORANT_ENTRY),
    "printer-inputs": (oids.PRT_INPUT_ENTRY,),
    "printer-outputs": (oids.PRT_OUTPUT_ENTRY,),
    "printer-media-paths": (oids.PRT_MEDIA_PATH_ENTRY,),
    "printer-alerts": (oids.PRT_ALERT_ENTRY,),
    "printer-console": (oids.PRT_CONSOLE_TEXT,),
}
"""Subtrees each collector needs walked; the reader walks each root once."""

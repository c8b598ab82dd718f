"""Printer-MIB / Host Resources enumerations, spot-checked against the MIB texts.

Expected values are quoted from the MIB sources named in each comment:
IANA-PRINTER-MIB revision 201609140000Z (librenms/librenms mibs/IANA-PRINTER-MIB),
Printer-MIB of RFC 3805 (librenms mibs/Printer-MIB) and HOST-RESOURCES-MIB /
HOST-RESOURCES-TYPES of RFC 2790.
"""

from __future__ import annotations

import re
from typing import get_args

import pytest
from fleetroom_agent.collect import enums, oids
from fleetroom_protocol.reading import AlertSeverity, CounterUnit
from hypothesis import given
from hypothesis import strategies as st

# --- IANA-PRINTER-MIB ------------------------------------------------------


@pytest.mark.parametrize(("table", "value", "name"), [
    # PrtMarkerSuppliesTypeTC: toner(3), wasteToner(4), opc(9), fuser(15),
    # tonerCartridge(21), covers(34), matteToner(35), matteInk(36)
    (enums.SUPPLY_TYPES, 3, "toner"),
    (enums.SUPPLY_TYPES, 4, "wasteToner"),
    (enums.SUPPLY_TYPES, 9, "opc"),
    (enums.SUPPLY_TYPES, 15, "fuser"),
    (enums.SUPPLY_TYPES, 21, "tonerCartridge"),
    (enums.SUPPLY_TYPES, 34, "covers"),
    (enums.SUPPLY_TYPES, 35, "matteToner"),
    (enums.SUPPLY_TYPES, 36, "matteInk"),
    # PrtMarkerMarkTechTC: electrophotographicLaser(4), inkjetAqueous(12), typesetter(27)
    (enums.MARKER_TECH, 4, "electrophotographicLaser"),
    (enums.MARKER_TECH, 12, "inkjetAqueous"),
    (enums.MARKER_TECH, 27, "typesetter"),
    # PrtInputTypeTC: sheetFeedAutoRemovableTray(3), sheetFeedPull(8)
    (enums.INPUT_TYPES, 3, "sheetFeedAutoRemovableTray"),
    (enums.INPUT_TYPES, 8, "sheetFeedPull"),
    # PrtOutputTypeTC: unRemovableBin(4), mailBox(6), continuousFanFold(7)
    (enums.OUTPUT_TYPES, 4, "unRemovableBin"),
    (enums.OUTPUT_TYPES, 6, "mailBox"),
    (enums.OUTPUT_TYPES, 7, "continuousFanFold"),
    # PrtMediaPathTypeTC: longEdgeBindingDuplex(3), shortEdgeBindingDuplex(4), simplex(5)
    (enums.MEDIA_PATH_TYPES, 3, "longEdgeBindingDuplex"),
    (enums.MEDIA_PATH_TYPES, 4, "shortEdgeBindingDuplex"),
    (enums.MEDIA_PATH_TYPES, 5, "simplex"),
    # PrtAlertTrainingLevelTC: untrained(3), fieldService(5), noInterventionRequired(7)
    (enums.ALERT_TRAINING_LEVELS, 3, "untrained"),
    (enums.ALERT_TRAINING_LEVELS, 5, "fieldService"),
    (enums.ALERT_TRAINING_LEVELS, 7, "noInterventionRequired"),
    # PrtAlertGroupTC: hostResourcesMIBDeviceTable(4), markerSupplies(11), alert(18),
    # finAttribute(33)
    (enums.ALERT_GROUPS, 4, "hostResourcesMIBDeviceTable"),
    (enums.ALERT_GROUPS, 11, "markerSupplies"),
    (enums.ALERT_GROUPS, 18, "alert"),
    (enums.ALERT_GROUPS, 33, "finAttribute"),
    # PrtAlertCodeTC: coverOpen(3), jam(8), subunitThermistorFailure(38), doorOpen(501),
    # printerReadyToPrint(507), inputMediaSupplyEmpty(808), outputMediaTrayFull(903),
    # markerTonerEmpty(1101), markerTonerAlmostEmpty(1104),
    # markerTonerCartridgeMissing(1115), mediaPathCannotDuplexMediaSelected(1304),
    # interpreterComplexPageEncountered(1509), alertRemovalOfBinaryChangeEntry(1801)
    (enums.ALERT_CODES, 3, "coverOpen"),
    (enums.ALERT_CODES, 8, "jam"),
    (enums.ALERT_CODES, 38, "subunitThermistorFailure"),
    (enums.ALERT_CODES, 501, "doorOpen"),
    (enums.ALERT_CODES, 507, "printerReadyToPrint"),
    (enums.ALERT_CODES, 808, "inputMediaSupplyEmpty"),
    (enums.ALERT_CODES, 903, "outputMediaTrayFull"),
    (enums.ALERT_CODES, 1101, "markerTonerEmpty"),
    (enums.ALERT_CODES, 1104, "markerTonerAlmostEmpty"),
    (enums.ALERT_CODES, 1115, "markerTonerCartridgeMissing"),
    (enums.ALERT_CODES, 1304, "mediaPathCannotDuplexMediaSelected"),
    (enums.ALERT_CODES, 1509, "interpreterComplexPageEncountered"),
    (enums.ALERT_CODES, 1801, "alertRemovalOfBinaryChangeEntry"),
    # PrtAlertCodeTC finisher block: staplerCoverOpen(30203), stitcherJam(30308),
    # folderMissing(30409), perforaterJam(30908), separationCutterJam(31108),
    # makeEnvelopeWarmingUp(31524), sheetRotatorOffline(31722),
    # inserterThermistorFailure(31838)
    (enums.ALERT_CODES, 30203, "staplerCoverOpen"),
    (enums.ALERT_CODES, 30308, "stitcherJam"),
    (enums.ALERT_CODES, 30409, "folderMissing"),
    (enums.ALERT_CODES, 30908, "perforaterJam"),
    (enums.ALERT_CODES, 31108, "separationCutterJam"),
    (enums.ALERT_CODES, 31524, "makeEnvelopeWarmingUp"),
    (enums.ALERT_CODES, 31722, "sheetRotatorOffline"),
    (enums.ALERT_CODES, 31838, "inserterThermistorFailure"),
    # --- Printer-MIB (RFC 3805) ---
    # PrtMarkerSuppliesClassTC: other(1), supplyThatIsConsumed(3), receptacleThatIsFilled(4)
    (enums.SUPPLY_CLASSES, 1, "other"),
    (enums.SUPPLY_CLASSES, 3, "supplyThatIsConsumed"),
    (enums.SUPPLY_CLASSES, 4, "receptacleThatIsFilled"),
    # PrtMarkerSuppliesSupplyUnitTC: tenThousandthsOfInches(3), impressions(7),
    # hundrethsOfFluidOunces(14) (sic), percent(19)
    (enums.SUPPLY_UNITS, 3, "tenThousandthsOfInches"),
    (enums.SUPPLY_UNITS, 7, "impressions"),
    (enums.SUPPLY_UNITS, 14, "hundrethsOfFluidOunces"),
    (enums.SUPPLY_UNITS, 19, "percent"),
    # PrtMarkerCounterUnitTC: micrometers(4), impressions(7), sheets(8), dotRow(9),
    # hours(11), feet(16), meters(17)
    (enums.COUNTER_UNITS, 4, "micrometers"),
    (enums.COUNTER_UNITS, 7, "impressions"),
    (enums.COUNTER_UNITS, 8, "sheets"),
    (enums.COUNTER_UNITS, 9, "dotRow"),
    (enums.COUNTER_UNITS, 11, "hours"),
    (enums.COUNTER_UNITS, 16, "feet"),
    (enums.COUNTER_UNITS, 17, "meters"),
    # PrtCapacityUnitTC: sheets(8), items(18), percent(19)
    (enums.CAPACITY_UNITS, 8, "sheets"),
    (enums.CAPACITY_UNITS, 18, "items"),
    (enums.CAPACITY_UNITS, 19, "percent"),
    # PrtMarkerColorantRoleTC: process(3), spot(4)
    (enums.COLORANT_ROLES, 3, "process"),
    (enums.COLORANT_ROLES, 4, "spot"),
    # PrtAlertSeverityLevelTC: other(1), critical(3), warning(4), warningBinaryChangeEvent(5)
    (enums.ALERT_SEVERITIES, 1, "other"),
    (enums.ALERT_SEVERITIES, 3, "critical"),
    (enums.ALERT_SEVERITIES, 4, "warning"),
    (enums.ALERT_SEVERITIES, 5, "warningBinaryChangeEvent"),
    # --- HOST-RESOURCES-MIB (RFC 2790) ---
    # hrDeviceStatus: unknown(1), running(2), warning(3), testing(4), down(5)
    (enums.HR_DEVICE_STATUS, 1, "unknown"),
    (enums.HR_DEVICE_STATUS, 2, "running"),
    (enums.HR_DEVICE_STATUS, 3, "warning"),
    (enums.HR_DEVICE_STATUS, 4, "testing"),
    (enums.HR_DEVICE_STATUS, 5, "down"),
    # hrPrinterStatus: other(1), unknown(2), idle(3), printing(4), warmup(5)
    (enums.HR_PRINTER_STATUS, 1, "other"),
    (enums.HR_PRINTER_STATUS, 2, "unknown"),
    (enums.HR_PRINTER_STATUS, 3, "idle"),
    (enums.HR_PRINTER_STATUS, 4, "printing"),
    (enums.HR_PRINTER_STATUS, 5, "warmup"),
    # HOST-RESOURCES-TYPES: hrDevicePrinter { hrDeviceTypes 5 },
    # hrDeviceVideo { hrDeviceTypes 10 }, hrDeviceNonVolatileMemory { hrDeviceTypes 21 }
    (enums.HR_DEVICE_TYPES, 5, "printer"),
    (enums.HR_DEVICE_TYPES, 10, "video"),
    (enums.HR_DEVICE_TYPES, 21, "nonVolatileMemory"),
])
def test_value_matches_mib(table, value, name):
    assert table[value] == name
    assert enums.name_of(table, value) == name


@pytest.mark.parametrize(("table", "size"), [
    # Number of enumerated values in each TC of the sources above.
    (enums.SUPPLY_TYPES, 36),
    (enums.MARKER_TECH, 27),
    (enums.INPUT_TYPES, 8),
    (enums.OUTPUT_TYPES, 7),
    (enums.MEDIA_PATH_TYPES, 5),
    (enums.ALERT_TRAINING_LEVELS, 7),
    (enums.ALERT_GROUPS, 22),
    # 38 generic + 57 group-specific + 17 finisher devices x 36 generic codes
    (enums.ALERT_CODES, 707),
    (enums.SUPPLY_CLASSES, 3),
    (enums.SUPPLY_UNITS, 15),
    (enums.COUNTER_UNITS, 10),
    (enums.CAPACITY_UNITS, 9),
    (enums.COLORANT_ROLES, 3),
    (enums.ALERT_SEVERITIES, 4),
    (enums.HR_DEVICE_STATUS, 5),
    (enums.HR_PRINTER_STATUS, 5),
    (enums.HR_DEVICE_TYPES, 18),
])
def test_table_is_complete(table, size):
    assert len(table) == size


def test_names_are_mib_identifiers_and_unique():
    tables = (enums.SUPPLY_TYPES, enums.MARKER_TECH, enums.INPUT_TYPES, enums.OUTPUT_TYPES,
              enums.MEDIA_PATH_TYPES, enums.ALERT_TRAINING_LEVELS, enums.ALERT_GROUPS,
              enums.ALERT_CODES, enums.SUPPLY_CLASSES, enums.SUPPLY_UNITS,
              enums.COUNTER_UNITS, enums.CAPACITY_UNITS, enums.COLORANT_ROLES,
              enums.ALERT_SEVERITIES, enums.HR_DEVICE_STATUS, enums.HR_PRINTER_STATUS,
              enums.HR_DEVICE_TYPES)
    for table in tables:
        assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", n) for n in table.values())
        assert len(set(table.values())) == len(table)
        assert all(v > 0 for v in table)


def test_finisher_alert_codes_follow_the_generic_codes():
    # IANA-PRINTER-MIB: staplerCoverOpen(30203) ... staplerThermistorFailure(30238),
    # then 30303 stitcher ... 31838 inserter; nothing between the device blocks.
    finisher = {c: n for c, n in enums.ALERT_CODES.items() if c >= 30000}
    assert min(finisher) == 30203
    assert max(finisher) == 31838
    for code, name in finisher.items():
        assert 3 <= code % 100 <= 38
        generic = enums.ALERT_CODES[code % 100].removeprefix("subunit")
        assert name.endswith(generic[0].upper() + generic[1:])
    assert enums.ALERT_CODES[30238] == "staplerThermistorFailure"
    assert enums.ALERT_CODES[31503] == "makeEnvelopeCoverOpen"
    assert 30202 not in enums.ALERT_CODES
    assert 30239 not in enums.ALERT_CODES


def test_codes_the_mib_does_not_have():
    # No prtAlertCode 1508 or 1116 in the IANA module; no severity 2 in RFC 3805.
    assert enums.name_of(enums.ALERT_CODES, 1508) == "unknown(1508)"
    assert enums.name_of(enums.ALERT_CODES, 1116) == "unknown(1116)"
    assert enums.name_of(enums.ALERT_SEVERITIES, 2) == "unknown(2)"
    assert enums.name_of(enums.SUPPLY_TYPES, 0) == "unknown(0)"
    assert enums.name_of(enums.SUPPLY_TYPES, -1) == "unknown(-1)"


def test_counter_units_map_to_protocol_units():
    ours = set(get_args(CounterUnit))
    assert set(enums.COUNTER_UNIT_TO_OURS) == set(enums.COUNTER_UNITS)
    assert set(enums.COUNTER_UNIT_TO_OURS.values()) <= ours
    assert enums.COUNTER_UNIT_TO_OURS[7] == "impressions"
    assert enums.COUNTER_UNIT_TO_OURS[8] == "sheets"
    assert enums.COUNTER_UNIT_TO_OURS[3] == "other"  # tenThousandthsOfInches


def test_alert_severity_names_fit_the_protocol():
    assert set(enums.ALERT_SEVERITIES.values()) <= set(get_args(AlertSeverity))
    assert set(enums.ERROR_STATE_SEVERITY.values()) <= set(get_args(AlertSeverity))


# --- hrDeviceType ----------------------------------------------------------


def test_hr_device_printer_oid():
    # HOST-RESOURCES-TYPES: hrDevicePrinter ::= { hrDeviceTypes 5 },
    # hrDeviceTypes = host(1.3.6.1.2.1.25) .3.1
    assert enums.HR_DEVICE_PRINTER == "1.3.6.1.2.1.25.3.1.5"
    assert enums.HR_DEVICE_PRINTER == oids.HR_DEVICE_PRINTER


@pytest.mark.parametrize(("oid", "name"), [
    ("1.3.6.1.2.1.25.3.1.5", "printer"),
    (".1.3.6.1.2.1.25.3.1.5", "printer"),
    ("1.3.6.1.2.1.25.3.1.4", "network"),
    ("1.3.6.1.2.1.25.3.1.99", "unknown(99)"),
    ("1.3.6.1.2.1.25.3.1.5.1", "unknown(1.3.6.1.2.1.25.3.1.5.1)"),
    ("1.3.6.1.4.1.11.2", "unknown(1.3.6.1.4.1.11.2)"),
    ("", "unknown()"),
])
def test_hr_device_type(oid, name):
    assert enums.hr_device_type(oid) == name


# --- hrPrinterDetectedErrorState -------------------------------------------


def test_error_state_bits_in_rfc_order():
    # HOST-RESOURCES-MIB (RFC 2790) hrPrinterDetectedErrorState: lowPaper 0 ...
    # serviceRequested 7, inputTrayMissing 8 ... overduePreventMaint 14.
    assert enums.ERROR_STATE_BITS == (
        "lowPaper", "noPaper", "lowToner", "noToner", "doorOpen", "jammed", "offline",
        "serviceRequested", "inputTrayMissing", "outputTrayMissing", "markerSupplyMissing",
        "outputNearFull", "outputFull", "inputTrayEmpty", "overduePreventMaint",
    )
    assert set(enums.ERROR_STATE_SEVERITY) == set(enums.ERROR_STATE_BITS)


@pytest.mark.parametrize(("raw", "flags"), [
    # "Bits are numbered starting with the most significant bit of the first byte
    # being bit 0" (RFC 2790).
    (b"\x20\x00", ["lowToner"]),
    (b"\x01\x00", ["serviceRequested"]),
    (b"\x80\x00", ["lowPaper"]),
    (b"\x00\x80", ["inputTrayMissing"]),
    (b"\x00\x02", ["overduePreventMaint"]),
    (b"\x00\x01", ["bit15"]),
    (b"\x00\x00", []),
    (b"", []),
    # one-octet values, as many printers send
    (b"\x20", ["lowToner"]),
    (b"\x40", ["noPaper"]),
    (b"\x00", []),
    # several bits, in bit order
    (b"\x24\x00", ["lowToner", "jammed"]),
    (b"\x0a\x00", ["doorOpen", "offline"]),
    (b"\xff\xfe", list(enums.ERROR_STATE_BITS)),
    # octets beyond the second
    (b"\x00\x00\x80", ["bit16"]),
    (b"\x00\x00\x00\x01", ["bit31"]),
])
def test_decode_error_state(raw, flags):
    assert enums.decode_error_state(raw) == flags


@given(st.binary(max_size=64))
def test_decode_error_state_never_raises(raw):
    flags = enums.decode_error_state(raw)
    known = set(enums.ERROR_STATE_BITS)
    for flag in flags:
        assert flag in known or re.fullmatch(r"bit(1[5-9]|[2-9]\d|\d{3,})", flag)
    assert len(flags) == sum(bin(b).count("1") for b in raw)
    assert len(set(flags)) == len(flags)
    assert all(enums.error_state_severity(f) in {"critical", "warning", "unknown"}
               for f in flags)


@pytest.mark.parametrize(("flag", "severity"), [
    # RFC 1514's bit -> hrDeviceStatus table: down(5) = critical, warning(3) = warning.
    ("lowPaper", "warning"),
    ("noPaper", "critical"),
    ("lowToner", "warning"),
    ("noToner", "critical"),
    ("doorOpen", "critical"),
    ("jammed", "critical"),
    ("offline", "critical"),
    ("serviceRequested", "warning"),
    # RFC 2790 bits: our reading, see enums.ERROR_STATE_SEVERITY
    ("markerSupplyMissing", "critical"),
    ("outputFull", "critical"),
    ("outputNearFull", "warning"),
    ("inputTrayEmpty", "warning"),
    ("overduePreventMaint", "warning"),
    ("bit15", "unknown"),
    ("bit40", "unknown"),
])
def test_error_state_severity(flag, severity):
    assert enums.error_state_severity(flag) == severity

"""Names for the integers the Printer MIB and the Host Resources MIB answer with.

Sources, read for this module (no value here is from memory):

* IANA-PRINTER-MIB, LAST-UPDATED / latest REVISION "201609140000Z" (14 Sep 2016),
  the IANA-maintained TCs first published with RFC 3805.  Read as vendored in
  librenms/librenms ``mibs/IANA-PRINTER-MIB`` and cross-checked against the pysmi
  compilation in DotZero24/pysnmp-mibs ``pysnmp_mibs/IANA-PRINTER-MIB.py`` (compiled
  2025, same revision list, so 2016-09-14 is still the newest revision).
* Printer-MIB v2, RFC 3805 (LAST-UPDATED "200406020000Z"), for the TCs that stayed in
  the Printer-MIB module itself.  Read as vendored in librenms ``mibs/Printer-MIB``.
* HOST-RESOURCES-MIB, RFC 2790, for hrDeviceStatus, hrPrinterStatus,
  hrPrinterDetectedErrorState and the hrDeviceTypes registrations.

Every table is a plain ``int -> name`` dict using the MIB's own labels (including its
spellings: ``hundrethsOfFluidOunces``, ``perforater…``), so a name can be searched for
in the MIB text.  :func:`name_of` turns a value no table knows into ``unknown(N)``:
devices do send unregistered numbers, and we keep them visible rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

# ---------------------------------------------------------------------------
# IANA-PRINTER-MIB (revision 201609140000Z)
# ---------------------------------------------------------------------------

# PrtMarkerSuppliesTypeTC (IANA-PRINTER-MIB).  3-22 are the Printer MIB values,
# 23-34 were added for the Finisher MIB (RFC 3806), 35-36 in revision 201111040000Z.
SUPPLY_TYPES: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "toner",
    4: "wasteToner",
    5: "ink",
    6: "inkCartridge",
    7: "inkRibbon",
    8: "wasteInk",
    9: "opc",
    10: "developer",
    11: "fuserOil",
    12: "solidWax",
    13: "ribbonWax",
    14: "wasteWax",
    15: "fuser",
    16: "coronaWire",
    17: "fuserOilWick",
    18: "cleanerUnit",
    19: "fuserCleaningPad",
    20: "transferUnit",
    21: "tonerCartridge",
    22: "fuserOiler",
    23: "water",
    24: "wasteWater",
    25: "glueWaterAdditive",
    26: "wastePaper",
    27: "bindingSupply",
    28: "bandingSupply",
    29: "stitchingWire",
    30: "shrinkWrap",
    31: "paperWrap",
    32: "staples",
    33: "inserts",
    34: "covers",
    35: "matteToner",
    36: "matteInk",
}

# PrtMarkerMarkTechTC (IANA-PRINTER-MIB).
MARKER_TECH: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "electrophotographicLED",
    4: "electrophotographicLaser",
    5: "electrophotographicOther",
    6: "impactMovingHeadDotMatrix9pin",
    7: "impactMovingHeadDotMatrix24pin",
    8: "impactMovingHeadDotMatrixOther",
    9: "impactMovingHeadFullyFormed",
    10: "impactBand",
    11: "impactOther",
    12: "inkjetAqueous",
    13: "inkjetSolid",
    14: "inkjetOther",
    15: "pen",
    16: "thermalTransfer",
    17: "thermalSensitive",
    18: "thermalDiffusion",
    19: "thermalOther",
    20: "electroerosion",
    21: "electrostatic",
    22: "photographicMicrofiche",
    23: "photographicImagesetter",
    24: "photographicOther",
    25: "ionDeposition",
    26: "eBeam",
    27: "typesetter",
}

# PrtInputTypeTC (IANA-PRINTER-MIB); sheetFeedPull(8) added in revision 201309230000Z.
INPUT_TYPES: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "sheetFeedAutoRemovableTray",
    4: "sheetFeedAutoNonRemovableTray",
    5: "sheetFeedManual",
    6: "continuousRoll",
    7: "continuousFanFold",
    8: "sheetFeedPull",
}

# PrtOutputTypeTC (IANA-PRINTER-MIB).
OUTPUT_TYPES: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "removableBin",
    4: "unRemovableBin",
    5: "continuousRollDevice",
    6: "mailBox",
    7: "continuousFanFold",
}

# PrtMediaPathTypeTC (IANA-PRINTER-MIB).
MEDIA_PATH_TYPES: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "longEdgeBindingDuplex",
    4: "shortEdgeBindingDuplex",
    5: "simplex",
}

# PrtAlertTrainingLevelTC (IANA-PRINTER-MIB).
ALERT_TRAINING_LEVELS: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "untrained",
    4: "trained",
    5: "fieldService",
    6: "management",
    7: "noInterventionRequired",
}

# PrtAlertGroupTC (IANA-PRINTER-MIB).  3-4 point into the Host Resources MIB, 5-18
# mostly match the Printer-MIB table numbers, 30-33 belong to the Finisher MIB.
ALERT_GROUPS: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "hostResourcesMIBStorageTable",
    4: "hostResourcesMIBDeviceTable",
    5: "generalPrinter",
    6: "cover",
    7: "localization",
    8: "input",
    9: "output",
    10: "marker",
    11: "markerSupplies",
    12: "markerColorant",
    13: "mediaPath",
    14: "channel",
    15: "interpreter",
    16: "consoleDisplayBuffer",
    17: "consoleLights",
    18: "alert",
    30: "finDevice",
    31: "finSupply",
    32: "finSupplyMediaInput",
    33: "finAttribute",
}

# PrtAlertCodeTC (IANA-PRINTER-MIB), everything below 30000: generic codes 1-38 and
# the per-group codes.  Note the real names: jam(8) (not "jammed"), markerTonerEmpty
# (1101) and markerTonerAlmostEmpty(1104) (there is no "tonerLow"), and 1801 is
# alertRemovalOfBinaryChangeEntry.  doorOpen(501)/doorClosed(502) are DEPRECATED in
# favour of coverOpen(3)/coverClosed(4) but old devices still send them.
_ALERT_CODES_PRINTER: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "coverOpen",
    4: "coverClosed",
    5: "interlockOpen",
    6: "interlockClosed",
    7: "configurationChange",
    8: "jam",
    9: "subunitMissing",
    10: "subunitLifeAlmostOver",
    11: "subunitLifeOver",
    12: "subunitAlmostEmpty",
    13: "subunitEmpty",
    14: "subunitAlmostFull",
    15: "subunitFull",
    16: "subunitNearLimit",
    17: "subunitAtLimit",
    18: "subunitOpened",
    19: "subunitClosed",
    20: "subunitTurnedOn",
    21: "subunitTurnedOff",
    22: "subunitOffline",
    23: "subunitPowerSaver",
    24: "subunitWarmingUp",
    25: "subunitAdded",
    26: "subunitRemoved",
    27: "subunitResourceAdded",
    28: "subunitResourceRemoved",
    29: "subunitRecoverableFailure",
    30: "subunitUnrecoverableFailure",
    31: "subunitRecoverableStorageError",
    32: "subunitUnrecoverableStorageError",
    33: "subunitMotorFailure",
    34: "subunitMemoryExhausted",
    35: "subunitUnderTemperature",
    36: "subunitOverTemperature",
    37: "subunitTimingFailure",
    38: "subunitThermistorFailure",
    # General Printer group
    501: "doorOpen",
    502: "doorClosed",
    503: "powerUp",
    504: "powerDown",
    505: "printerNMSReset",
    506: "printerManualReset",
    507: "printerReadyToPrint",
    # Input group
    801: "inputMediaTrayMissing",
    802: "inputMediaSizeChange",
    803: "inputMediaWeightChange",
    804: "inputMediaTypeChange",
    805: "inputMediaColorChange",
    806: "inputMediaFormPartsChange",
    807: "inputMediaSupplyLow",
    808: "inputMediaSupplyEmpty",
    809: "inputMediaChangeRequest",
    810: "inputManualInputRequest",
    811: "inputTrayPositionFailure",
    812: "inputTrayElevationFailure",
    813: "inputCannotFeedSizeSelected",
    # Output group
    901: "outputMediaTrayMissing",
    902: "outputMediaTrayAlmostFull",
    903: "outputMediaTrayFull",
    904: "outputMailboxSelectFailure",
    # Marker group
    1001: "markerFuserUnderTemperature",
    1002: "markerFuserOverTemperature",
    1003: "markerFuserTimingFailure",
    1004: "markerFuserThermistorFailure",
    1005: "markerAdjustingPrintQuality",
    # Marker Supplies group
    1101: "markerTonerEmpty",
    1102: "markerInkEmpty",
    1103: "markerPrintRibbonEmpty",
    1104: "markerTonerAlmostEmpty",
    1105: "markerInkAlmostEmpty",
    1106: "markerPrintRibbonAlmostEmpty",
    1107: "markerWasteTonerReceptacleAlmostFull",
    1108: "markerWasteInkReceptacleAlmostFull",
    1109: "markerWasteTonerReceptacleFull",
    1110: "markerWasteInkReceptacleFull",
    1111: "markerOpcLifeAlmostOver",
    1112: "markerOpcLifeOver",
    1113: "markerDeveloperAlmostEmpty",
    1114: "markerDeveloperEmpty",
    1115: "markerTonerCartridgeMissing",
    # Media Path group
    1301: "mediaPathMediaTrayMissing",
    1302: "mediaPathMediaTrayAlmostFull",
    1303: "mediaPathMediaTrayFull",
    1304: "mediaPathCannotDuplexMediaSelected",
    # Interpreter group (1508 is not assigned)
    1501: "interpreterMemoryIncrease",
    1502: "interpreterMemoryDecrease",
    1503: "interpreterCartridgeAdded",
    1504: "interpreterCartridgeDeleted",
    1505: "interpreterResourceAdded",
    1506: "interpreterResourceDeleted",
    1507: "interpreterResourceUnavailable",
    1509: "interpreterComplexPageEncountered",
    # Alert group
    1801: "alertRemovalOfBinaryChangeEntry",
}

# The finisher alert codes 30203-31838 (IANA-PRINTER-MIB revision 201005170000Z,
# from PWG 5100.9) follow one rule, which the MIB spells out line by line:
#     code = 30000 + 100 * device + generic
# where ``generic`` is one of the generic codes 3-38 above and the name is the
# device prefix plus the generic name with a leading "subunit" dropped and the first
# letter capitalised: staplerCoverOpen(30203), stitcherJam(30308),
# inserterThermistorFailure(31838).  ``device`` is the FinDeviceTypeTC value, except
# that stapler (a stitcher(3) stitching with staples) uses 2.  The prefixes are the
# MIB's, including the spelling "perforater".
_FINISHER_DEVICES: Final[Mapping[int, str]] = {
    2: "stapler",
    3: "stitcher",
    4: "folder",
    5: "binder",
    6: "trimmer",
    7: "dieCutter",
    8: "puncher",
    9: "perforater",
    10: "slitter",
    11: "separationCutter",
    12: "imprinter",
    13: "wrapper",
    14: "bander",
    15: "makeEnvelope",
    16: "stacker",
    17: "sheetRotator",
    18: "inserter",
}
_FINISHER_GENERIC_RANGE: Final = range(3, 39)


def _finisher_alert_codes() -> dict[int, str]:
    codes: dict[int, str] = {}
    for device, prefix in _FINISHER_DEVICES.items():
        for generic in _FINISHER_GENERIC_RANGE:
            suffix = _ALERT_CODES_PRINTER[generic].removeprefix("subunit")
            codes[30000 + 100 * device + generic] = prefix + suffix[0].upper() + suffix[1:]
    return codes


# PrtAlertCodeTC, complete (707 values in revision 201609140000Z).  Codes that PWG
# 5107.3 (MFD alerts: scanner, fax, 1116+ supply codes) proposed are not in the IANA
# module and therefore not here; they come out as unknown(N).
ALERT_CODES: Final[Mapping[int, str]] = {**_ALERT_CODES_PRINTER, **_finisher_alert_codes()}

# ---------------------------------------------------------------------------
# Printer-MIB module itself (RFC 3805)
# ---------------------------------------------------------------------------

# PrtMarkerSuppliesClassTC (RFC 3805).
SUPPLY_CLASSES: Final[Mapping[int, str]] = {
    1: "other",
    3: "supplyThatIsConsumed",
    4: "receptacleThatIsFilled",
}

# PrtMarkerSuppliesSupplyUnitTC (RFC 3805).  18-19 are for the Finisher MIB; 14 is
# spelled "hundrethsOfFluidOunces" in the MIB.
SUPPLY_UNITS: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "tenThousandthsOfInches",
    4: "micrometers",
    7: "impressions",
    8: "sheets",
    11: "hours",
    12: "thousandthsOfOunces",
    13: "tenthsOfGrams",
    14: "hundrethsOfFluidOunces",
    15: "tenthsOfMilliliters",
    16: "feet",
    17: "meters",
    18: "items",
    19: "percent",
}

# PrtMarkerCounterUnitTC (RFC 3805): the unit of prtMarkerLifeCount/PowerOnCount.
COUNTER_UNITS: Final[Mapping[int, str]] = {
    3: "tenThousandthsOfInches",
    4: "micrometers",
    5: "characters",
    6: "lines",
    7: "impressions",
    8: "sheets",
    9: "dotRow",
    11: "hours",
    16: "feet",
    17: "meters",
}

# PrtMarkerCounterUnitTC -> fleetroom_protocol CounterUnit.  Only units that mean the
# same thing map to a unit of ours; lengths in 1/10000 inch or micrometres, characters,
# lines, dot rows and hours are not page counts, so they are "other" and the raw MIB
# unit stays findable through COUNTER_UNITS.
COUNTER_UNIT_TO_OURS: Final[Mapping[int, str]] = {
    3: "other",
    4: "other",
    5: "other",
    6: "other",
    7: "impressions",
    8: "sheets",
    9: "other",
    11: "other",
    16: "feet",
    17: "meters",
}

# PrtCapacityUnitTC (RFC 3805): unit of prtInputMaxCapacity / prtOutputMaxCapacity.
CAPACITY_UNITS: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "tenThousandthsOfInches",
    4: "micrometers",
    8: "sheets",
    16: "feet",
    17: "meters",
    18: "items",
    19: "percent",
}

# PrtMarkerColorantRoleTC (RFC 3805).
COLORANT_ROLES: Final[Mapping[int, str]] = {
    1: "other",
    3: "process",
    4: "spot",
}

# PrtAlertSeverityLevelTC (RFC 3805).  There is no 2: a device sending it is wrong.
ALERT_SEVERITIES: Final[Mapping[int, str]] = {
    1: "other",
    3: "critical",
    4: "warning",
    5: "warningBinaryChangeEvent",
}

# ---------------------------------------------------------------------------
# HOST-RESOURCES-MIB (RFC 2790)
# ---------------------------------------------------------------------------

# hrDeviceStatus (RFC 2790).
HR_DEVICE_STATUS: Final[Mapping[int, str]] = {
    1: "unknown",
    2: "running",
    3: "warning",
    4: "testing",
    5: "down",
}

# hrPrinterStatus (RFC 2790).
HR_PRINTER_STATUS: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "idle",
    4: "printing",
    5: "warmup",
}

# hrDeviceTypes (RFC 2790, HOST-RESOURCES-TYPES): hrDeviceType is an OID
# ``hrDeviceTypes.<arc>``.  Arcs 7-9 are not assigned.  Names drop the "hrDevice"
# prefix of the MIB identifiers (hrDevicePrinter -> "printer").
HR_DEVICE_TYPES_ROOT: Final = "1.3.6.1.2.1.25.3.1"
HR_DEVICE_TYPES: Final[Mapping[int, str]] = {
    1: "other",
    2: "unknown",
    3: "processor",
    4: "network",
    5: "printer",
    6: "diskStorage",
    10: "video",
    11: "audio",
    12: "coprocessor",
    13: "keyboard",
    14: "modem",
    15: "parallelPort",
    16: "pointing",
    17: "serialPort",
    18: "tape",
    19: "clock",
    20: "volatileMemory",
    21: "nonVolatileMemory",
}
HR_DEVICE_PRINTER: Final = f"{HR_DEVICE_TYPES_ROOT}.5"
"""hrDevicePrinter: the hrDeviceType of rows that have an hrPrinterTable entry."""


def hr_device_type(oid: str) -> str:
    """Name of an hrDeviceType value (``"1.3.6.1.2.1.25.3.1.5"`` -> ``"printer"``).

    A leading dot is accepted; an OID outside hrDeviceTypes comes back as
    ``unknown(<oid>)``.
    """
    bare = oid.strip().lstrip(".")
    arc = bare.removeprefix(HR_DEVICE_TYPES_ROOT + ".")
    if arc != bare and arc.isdigit():
        return name_of(HR_DEVICE_TYPES, int(arc))
    return f"unknown({bare})"


# hrPrinterDetectedErrorState (RFC 2790): an OCTET STRING of condition bits; bit 0 is
# the most significant bit of the first octet.  RFC 1514 defined bits 0-7; RFC 2790
# (2000) added 8-14.  RFC 3805 uses these bits but defines none of its own.
ERROR_STATE_BITS: Final[tuple[str, ...]] = (
    "lowPaper",             # 0
    "noPaper",              # 1
    "lowToner",             # 2
    "noToner",              # 3
    "doorOpen",             # 4
    "jammed",               # 5
    "offline",              # 6
    "serviceRequested",     # 7
    "inputTrayMissing",     # 8
    "outputTrayMissing",    # 9
    "markerSupplyMissing",  # 10
    "outputNearFull",       # 11
    "outputFull",           # 12
    "inputTrayEmpty",       # 13
    "overduePreventMaint",  # 14
)

ErrorStateSeverity = Literal["critical", "warning", "unknown"]

# How bad each condition is, by itself.  The standards do not settle this for all
# bits, so this is our reading:
# * RFC 1514 tied bits 0-7 to hrDeviceStatus: noPaper, noToner, doorOpen, jammed and
#   offline -> down(5); lowPaper, lowToner and serviceRequested -> warning(3).  We
#   keep exactly that split (down = critical).  serviceRequested stays a warning: it
#   covers "maintenance due" as well as real faults, and a device that is down for a
#   service fault also reports hrDeviceStatus down(5) and a critical prtAlert row.
# * RFC 2790 dropped the per-bit hrDeviceStatus column (the PWG asked for "warning(3)
#   or down(5)" for every bit, pwg.org pmp archive, Aug 1999), so bits 8-14 have no
#   standard severity.  Critical = the condition alone stops printing, by analogy
#   with RFC 1514's down(5) bits: markerSupplyMissing (like noToner) and outputFull
#   (nowhere to put the paper).  Warning = a limit is near or only one of several
#   parts is affected: a missing or empty tray (other trays may still feed; RFC 1514
#   used lowPaper for "a tray is empty but not needed now" and noPaper once it is),
#   a missing output tray, outputNearFull, overduePreventMaint.
ERROR_STATE_SEVERITY: Final[Mapping[str, ErrorStateSeverity]] = {
    "lowPaper": "warning",
    "noPaper": "critical",
    "lowToner": "warning",
    "noToner": "critical",
    "doorOpen": "critical",
    "jammed": "critical",
    "offline": "critical",
    "serviceRequested": "warning",
    "inputTrayMissing": "warning",
    "outputTrayMissing": "warning",
    "markerSupplyMissing": "critical",
    "outputNearFull": "warning",
    "outputFull": "critical",
    "inputTrayEmpty": "warning",
    "overduePreventMaint": "warning",
}


def decode_error_state(raw: bytes) -> list[str]:
    """Names of the conditions set in an hrPrinterDetectedErrorState value.

    Bit 0 is the most significant bit of the first octet (RFC 2790), so
    ``b"\\x20\\x00"`` is ``["lowToner"]`` and ``b"\\x00\\x80"`` is
    ``["inputTrayMissing"]``.  Many printers send a single octet; that is read the
    same way.  Bits without a name (15 and up) come back as ``bit15``, ``bit16``, …
    Never raises; names are in bit order.
    """
    flags: list[str] = []
    for octet_index, octet in enumerate(raw):
        if not octet:
            continue
        for bit_in_octet in range(8):
            if octet & (0x80 >> bit_in_octet):
                bit = octet_index * 8 + bit_in_octet
                flags.append(ERROR_STATE_BITS[bit] if bit < len(ERROR_STATE_BITS)
                             else f"bit{bit}")
    return flags


def error_state_severity(flag: str) -> ErrorStateSeverity:
    """Severity of one :func:`decode_error_state` name; ``unknown`` for ``bitN``."""
    return ERROR_STATE_SEVERITY.get(flag, "unknown")


def name_of(table: Mapping[int, str], value: int) -> str:
    """The MIB name of ``value`` in ``table``, or ``unknown(<value>)``."""
    return table.get(value, f"unknown({value})")

"""Standard OIDs the collectors read (RFC 3418, RFC 2863, RFC 2790, RFC 3805).

Only standard-MIB locations live here; vendor OIDs live in profile YAML files with
their sources.
"""

from __future__ import annotations

# SNMPv2-MIB system group (RFC 3418)
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
SYSTEM_SCALARS = (SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_CONTACT, SYS_NAME, SYS_LOCATION)

# IF-MIB (RFC 2863)
IF_PHYS_ADDRESS = "1.3.6.1.2.1.2.2.1.6"

# HOST-RESOURCES-MIB (RFC 2790)
HR_DEVICE_ENTRY = "1.3.6.1.2.1.25.3.2.1"  # columns: 2 type, 3 descr, 5 status
HR_DEVICE_TYPE_1 = "1.3.6.1.2.1.25.3.2.1.2.1"
HR_DEVICE_PRINTER = "1.3.6.1.2.1.25.3.1.5"
HR_PRINTER_ENTRY = "1.3.6.1.2.1.25.3.5.1"  # columns: 1 status, 2 detected error state

# Printer-MIB v2 (RFC 3805), all under printmib 1.3.6.1.2.1.43
PRINTMIB = "1.3.6.1.2.1.43"
PRT_GENERAL_ENTRY = "1.3.6.1.2.1.43.5.1.1"  # 16 printer name, 17 serial, 18/19 alert counts
PRT_INPUT_ENTRY = "1.3.6.1.2.1.43.8.2.1"
PRT_OUTPUT_ENTRY = "1.3.6.1.2.1.43.9.2.1"
PRT_MARKER_ENTRY = "1.3.6.1.2.1.43.10.2.1"  # 2 tech, 3 counter unit, 4 life count, 6 colorants
PRT_MARKER_LIFE_COUNT = "1.3.6.1.2.1.43.10.2.1.4"
PRT_SUPPLIES_ENTRY = "1.3.6.1.2.1.43.11.1.1"
PRT_COLORANT_ENTRY = "1.3.6.1.2.1.43.12.1.1"  # 4 colorant value (name)
PRT_MEDIA_PATH_ENTRY = "1.3.6.1.2.1.43.13.4.1"  # 9 type
PRT_CONSOLE_TEXT = "1.3.6.1.2.1.43.16.5.1.2"
PRT_ALERT_ENTRY = "1.3.6.1.2.1.43.18.1.1"
PRT_ALERT_ALL_EVENTS_1 = "1.3.6.1.2.1.43.5.1.1.19.1"

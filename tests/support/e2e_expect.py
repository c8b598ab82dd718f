"""What the server must hold for a recording — worked out from the files, not from our code.

A device's expected serial, manufacturer and counters come from its ``.snmprec``
file and the OIDs the profile YAML maps (``identity.serial.oid``,
``counters[].oid``, following ``extends:`` from the most specific profile to the
base ones); supplies and alerts straight from the standard tables of RFC 3805
(prtMarkerSuppliesTable, prtAlertTable) and RFC 2790 (hrPrinterDetectedErrorState,
bit 0 = most significant bit of the first octet).  The YAML is read with PyYAML
and the recordings with :mod:`tests.support.recordings`, never with the profile
loader, the collector or the server's ingest, so a bug there cannot agree with
itself.  Profiles with packed-value decoders or counter tables are refused: their
expectations would need a second decoder, and the recordings chosen do not need one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fleetroom_profiles
import yaml

from tests.support import recordings as rec

PROFILE_DATA = Path(fleetroom_profiles.__file__).parent / "data"
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SUPPLY_DESCRIPTION = "1.3.6.1.2.1.43.11.1.1.6.1"
ALERT_SEVERITY = "1.3.6.1.2.1.43.18.1.1.2.1"
ALERT_DESCRIPTION = "1.3.6.1.2.1.43.18.1.1.8.1"
ERROR_STATE = "1.3.6.1.2.1.25.3.5.1.2.1"
HR_DEVICE_TYPE = "1.3.6.1.2.1.25.3.2.1.2"
HR_DEVICE_PRINTER = "1.3.6.1.2.1.25.3.1.5"
PRT_GENERAL = "1.3.6.1.2.1.43.5.1.1"

ALERT_SEVERITIES = {1: "other", 3: "critical", 4: "warning", 5: "warningBinaryChangeEvent"}
"""RFC 3805 PrtAlertSeverityLevelTC."""

ERROR_BITS = ("lowPaper", "noPaper", "lowToner", "noToner", "doorOpen", "jammed", "offline",
              "serviceRequested", "inputTrayMissing", "outputTrayMissing",
              "markerSupplyMissing", "outputNearFull", "outputFull", "inputTrayEmpty",
              "overduePreventMaint")
"""RFC 3805 hrPrinterDetectedErrorState bit names, bit 0 first (MSB of octet 1)."""


@functools.cache
def profile_yaml(name: str) -> dict[str, Any]:
    """The profile file whose ``name:`` is ``name``."""
    for path in sorted(PROFILE_DATA.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("name") == name:
            return data
    raise KeyError(f"no profile named {name!r} under {PROFILE_DATA}")


def chain(name: str) -> list[dict[str, Any]]:
    """``name`` and everything it extends, most specific first."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        data = profile_yaml(n)
        out.append(data)
        for parent in data.get("extends") or []:
            visit(parent)

    visit(name)
    return out


def matches(name: str, recording: dict[str, tuple[str, str]]) -> bool:
    """Whether one of the profile's own ``match`` rules covers the recording."""
    oid = (rec.text(recording, SYS_OBJECT_ID) or "").lstrip(".")
    descr = rec.text(recording, SYS_DESCR) or ""
    for rule in profile_yaml(name).get("match") or []:
        prefix = str(rule.get("sysobjectid", "")).lstrip(".")
        if prefix and not (oid == prefix or oid.startswith(prefix + ".")):
            continue
        if "sysdescr" in rule and not re.search(rule["sysdescr"], descr):
            continue
        if prefix or "sysdescr" in rule:
            return True
    return False


def _rules(name: str, field_name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for data in chain(name):
        value = (data.get("identity") or {}).get(field_name)
        if isinstance(value, dict):
            out.append(value)
        elif isinstance(value, list):
            out.extend(value)
    return out


def _extract(text: str, regex: str | None) -> str | None:
    if regex is None:
        return text.strip() or None
    m = re.search(regex, text)
    if not m:
        return None
    value = m.groupdict().get("value") or (m.group(1) if m.groups() else m.group(0))
    return value.strip() or None


def identity_value(name: str, recording: dict[str, tuple[str, str]],
                   field_name: str) -> str | None:
    """The first identity rule of the chain that yields a value for ``field_name``."""
    for rule in _rules(name, field_name):
        if "value" in rule:
            return str(rule["value"])
        if "oid" in rule:
            text = rec.text(recording, str(rule["oid"]).lstrip("."))
            value = _extract(text, rule.get("regex")) if text is not None else None
        else:
            value = _extract(rec.text(recording, SYS_DESCR) or "", rule["sysdescr"])
        if value:
            return value
    return None


@dataclass(frozen=True)
class CounterSpec:
    """A counter as the recording serves it: ``initial`` plus, for snmpsim's ``numeric``
    variation module, ``rate`` per second since the simulator started."""

    initial: int
    rate: float = 0.0

    def bounds(self, elapsed_s: float) -> tuple[int, int]:
        """The values a read ``elapsed_s`` seconds after the start may return."""
        return self.initial, self.initial + int(self.rate * elapsed_s) + 1


def _counter_spec(recording: dict[str, tuple[str, str]], oid: str) -> CounterSpec | None:
    tag, value = recording[oid]
    if tag.endswith(":numeric"):
        params = dict(part.split("=", 1) for part in value.split(","))
        return CounterSpec(int(params["initial"]), float(params.get("rate", 0)))
    if ":" in tag:
        raise ValueError(f"{oid}: variation {tag} is not modelled here")
    number = int(value)
    return CounterSpec(number) if number >= 0 else None


def counters(name: str, recording: dict[str, tuple[str, str]]) -> dict[str, CounterSpec]:
    """Counter name → value for every counter OID of the chain present in the file."""
    out: dict[str, CounterSpec] = {}
    for data in chain(name):
        for c in data.get("counters") or []:
            oid = str(c["oid"]).lstrip(".")
            if c["name"] not in out and oid in recording:
                spec = _counter_spec(recording, oid)
                if spec is not None:
                    out[c["name"]] = spec
        for kind in ("decoders", "counter_tables"):
            for entry in data.get(kind) or []:
                root = str(entry.get("oid") or entry.get("root")).lstrip(".")
                if any(o == root or o.startswith(root + ".") for o in recording):
                    raise ValueError(f"{data['name']}: {kind} apply to this recording; "
                                     "choose one whose expectations need no decoder")
    return out


def is_printer(recording: dict[str, tuple[str, str]], profile: str | None) -> bool:
    """RFC 2790 hrDevicePrinter row, any Printer-MIB general row, or a vendor profile."""
    types = rec.column(recording, HR_DEVICE_TYPE)
    if any(v.lstrip(".") == HR_DEVICE_PRINTER for _, v in types.values()):
        return True
    if rec.column(recording, PRT_GENERAL):
        return True
    return profile is not None and profile not in {"generic-printer"}


def error_flags(recording: dict[str, tuple[str, str]]) -> set[str]:
    """hrPrinterDetectedErrorState.1 decoded by the RFC's bit order."""
    if ERROR_STATE not in recording:
        return set()
    tag, value = recording[ERROR_STATE]
    octets = bytes.fromhex(value) if tag.endswith("x") else value.encode("latin-1")
    flags = set()
    for bit, name in enumerate(ERROR_BITS):
        byte, offset = divmod(bit, 8)
        if byte < len(octets) and octets[byte] & (0x80 >> offset):
            flags.add(name)
    return flags


@dataclass
class Expected:
    """One device as the server must store it."""

    label: str
    recording: Path
    profile: str
    serial: str | None
    manufacturer: str | None
    counters: dict[str, CounterSpec]
    supply_indexes: set[str]
    prt_alerts: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    """prtAlertTable index → (severity, description)."""
    error_flags: set[str] = field(default_factory=set)

    @property
    def critical(self) -> bool:
        return any(sev == "critical" for sev, _ in self.prt_alerts.values())


def expected(label: str, path: Path, profile: str) -> Expected:
    """What the server must hold for the device serving ``path`` read with ``profile``."""
    r = rec.load(path)
    if not matches(profile, r):
        raise AssertionError(f"{path.name}: profile {profile} does not match it")
    alerts = {int(idx): (ALERT_SEVERITIES.get(int(v), v),
                         rec.text(r, f"{ALERT_DESCRIPTION}.{idx}"))
              for idx, (_, v) in rec.column(r, ALERT_SEVERITY).items()}
    return Expected(label=label, recording=path, profile=profile,
                    serial=identity_value(profile, r, "serial"),
                    manufacturer=identity_value(profile, r, "manufacturer"),
                    counters=counters(profile, r),
                    supply_indexes=set(rec.column(r, SUPPLY_DESCRIPTION)),
                    prt_alerts=alerts, error_flags=error_flags(r))

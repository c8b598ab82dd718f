"""Every real recording in ../shared, served by snmpsim on loopback, read over SNMP.

Expected values come from the recording files themselves (named by OID below) and
from MANIFEST.tsv's vendor column — never from the program's output.  Recordings
that hold only identity OIDs must still give vendor and model, and say honestly
what is missing.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from fleetroom_agent.collect.credentials import CredentialSet, make_credential
from fleetroom_agent.collect.reader import Failed, Skipped
from fleetroom_agent.scan import probe_one
from fleetroom_agent.snmp.types import Timing
from fleetroom_profiles import ProfileSet
from fleetroom_protocol import Reading

from tests.support import recordings as rec

pytestmark = pytest.mark.xdist_group("shared_sim")

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
LIFE_COUNT_1_1 = "1.3.6.1.2.1.43.10.2.1.4.1.1"  # prtMarkerLifeCount, RFC 3805
SUPPLY_LEVEL = "1.3.6.1.2.1.43.11.1.1.9"  # prtMarkerSuppliesLevel
SUPPLY_MAX = "1.3.6.1.2.1.43.11.1.1.8"  # prtMarkerSuppliesMaxCapacity
SUPPLY_DESCR = "1.3.6.1.2.1.43.11.1.1.6"
SERIAL = "1.3.6.1.2.1.43.5.1.1.17.1"  # prtGeneralSerialNumber
ERROR_STATE = "1.3.6.1.2.1.25.3.5.1.2"  # hrPrinterDetectedErrorState

MANIFEST = rec.manifest()
FILES = sorted(MANIFEST) or ["(no recordings)"]
PROFILES = ProfileSet.load()
TIMING = Timing(timeout=3.0, retries=1, deadline=60.0)


def _has_identity(r: dict[str, tuple[str, str]]) -> bool:
    return SYS_DESCR in r or SYS_OBJECT_ID in r


def _expected_brand(vendor_column: str) -> tuple[str, str | None, str | None]:
    """MANIFEST vendor column → (brand, maker for OEM brands, special kind)."""
    m = re.match(r"^(.*?)\s*\((.*)\)$", vendor_column)
    if not m:
        return vendor_column, None, None
    brand, note = m.group(1), m.group(2)
    if note.endswith(" OEM"):
        return brand, note.removesuffix(" OEM"), None
    if note == "label":
        return brand, None, "label-printer"
    if note == "scanner":
        return brand, None, "scanner"
    return brand, None, None


def _read(sim, stem: str) -> Reading | Skipped | Failed:
    creds = [CredentialSet(make_credential(name="test", version="2c", community=stem))]
    return asyncio.run(probe_one(sim.endpoint, creds, PROFILES, TIMING))


def _all_text(r: dict[str, tuple[str, str]]) -> str:
    return " ".join("\n".join(rec.text(r, oid) or "" for oid, (tag, _) in r.items()
                              if tag.startswith("4")).split(" "))


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


# MANIFEST.tsv says "HP" for jetdirect_1, but its sysObjectID 1.3.6.1.4.1.1347.41 is under
# IANA enterprise 1347 (Kyocera); the "HP ETHERNET" sysDescr is Kyocera's JetDirect
# emulation (Observium CE definitions, os kyocera).  The enterprise number decides.
BRAND_BY_ENTERPRISE = {"jetdirect_1.snmprec": "Kyocera"}
# Its sysDescr describes only the network card ("…,ROM J.sp.00,JETDIRECT EX,JD28 EEPROM
# 5.58") and the file holds nothing else: the model is honestly missing.
NO_MODEL_IN_SYSDESCR = {"jetdirect_1.snmprec"}


@pytest.mark.parametrize("name", FILES)
def test_recording_is_identified_and_read(shared_sim, name):
    path = rec.recordings_dir() / name  # type: ignore[operator]
    r = rec.load(path)
    stem = Path(name).stem
    result = _read(shared_sim, stem)

    if not _has_identity(r):
        # A context fragment (e.g. "…@Jetdirect"): no system group to identify by.
        assert isinstance(result, Failed)
        assert "no values" in result.reason
        return
    assert isinstance(result, Reading), f"{name}: {result}"
    brand, maker, kind = _expected_brand(MANIFEST[name]["vendor"])
    brand = BRAND_BY_ENTERPRISE.get(name, brand)

    # Identity: the brand on the device ("Fuji Xerox" is a Xerox); the maker for OEM brands.
    assert result.identity.vendor is not None
    assert brand.lower() in result.identity.vendor.lower(), result.profile
    if maker:
        assert (result.identity.manufacturer or "").lower() == maker.lower()
    if kind:
        assert result.identity.device_kind == kind
    assert result.identity.sys_descr == rec.text(r, SYS_DESCR)
    if SYS_OBJECT_ID in r:
        assert result.identity.sys_object_id == rec.text(r, SYS_OBJECT_ID).lstrip(".")

    # The model is never invented: it is text the device gave.
    if result.identity.model is not None:
        assert _squash(result.identity.model) in _squash(_all_text(r))
    elif rec.text(r, SYS_DESCR) and name not in NO_MODEL_IN_SYSDESCR:
        pytest.fail(f"{name}: no model although sysDescr is {rec.text(r, SYS_DESCR)!r}")
    if result.identity.model is None:
        assert any(m.field == "identity.model" for m in result.missing)

    # prtGeneralSerialNumber, where the vendor has no serial rule of its own.
    serial = rec.text(r, SERIAL)
    if serial and result.identity.serial and result.profile and \
            "printer-mib" in result.profile.chain[-1:]:
        assert result.identity.serial == serial.strip()

    # Counters: every value equals the recording at the OID its source names.
    for c in result.counters:
        oid = c.source.split(" ", 1)[0]
        if oid in r and rec.integer(r, oid) is not None and r[oid][0] in ("65", "66", "2",
                                                                             "70", "65x"):
            assert c.value == rec.integer(r, oid), c
    total = result.counter("total")
    if LIFE_COUNT_1_1 in r and total is not None and "43.10.2.1.4" in next(
            c.source for c in result.counters if c.name == "total"):
        assert total == rec.integer(r, LIFE_COUNT_1_1)
    if total is None:
        assert any(m.field == "counters.total" for m in result.missing)

    # Supplies: one per prtMarkerSuppliesTable row; levels as recorded; no invented %.
    rows = set(rec.column(r, SUPPLY_DESCR)) | set(rec.column(r, SUPPLY_LEVEL))
    standard = [s for s in result.supplies if isinstance(s.index, int)]
    assert len(standard) == len(rows), name
    levels, maxes = rec.column(r, SUPPLY_LEVEL), rec.column(r, SUPPLY_MAX)
    for s in standard:
        key = f"1.{s.index}"
        if key in levels:
            assert s.raw_level == int(levels[key][1])
        if key in maxes:
            assert s.raw_max == int(maxes[key][1])
        if s.level_percent is not None:
            assert s.raw_level is not None
            assert s.raw_max is not None
            assert 0 <= s.raw_level <= s.raw_max
            assert s.level_percent == pytest.approx(s.raw_level * 100 / s.raw_max, abs=0.05)
        else:
            assert s.state.value in {"ok", "low", "empty", "some-remaining", "unknown",
                                     "almost-full", "full"}
        if s.raw_level == -3:
            assert s.level_percent is None
            assert s.state.value in {"some-remaining", "ok"}
    if not rows:
        assert any(m.field == "supplies" for m in result.missing)

    # hrPrinterDetectedErrorState decoded from the recorded octets.
    err = rec.column(r, ERROR_STATE)
    if err and result.status.error_state_raw is not None:
        tag, value = next(iter(err.values()))
        raw = bytes.fromhex(value) if tag.endswith("x") else value.encode("latin-1")
        assert result.status.error_state_raw == raw.hex()
        assert len(result.status.error_flags) == sum(bin(b).count("1") for b in raw)


def test_partial_recording_is_honest(shared_sim):
    """dell-laser.snmprec holds only sysDescr: vendor and model, everything else missing."""
    result = _read(shared_sim, "dell-laser")
    assert isinstance(result, Reading)
    assert result.identity.vendor == "Dell"
    assert result.identity.model
    assert "B3460dn" in result.identity.model
    missing = {m.field: m.reason for m in result.missing}
    assert missing["counters.total"] == "not-supported"
    assert missing["supplies"] == "not-supported"
    assert result.counters == []
    assert result.supplies == []

"""Shipped profiles against the real-printer recordings in ../shared/fixtures/snmprec.

The expected profile of every recording is written down here by hand from
MANIFEST.tsv's vendor column and the recording's own sysDescr, never from what
the matcher answers.  The recordings are read by the dozen lines below, not by
any Fleetroom parser.
"""

from __future__ import annotations

import csv
import os
import re

import pytest
from fleetroom_profiles import ProfileSet, choose_profile

from tests.support.recordings import load, recordings_dir

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"

INTEGER_TAGS = {"2", "65", "66", "70"}  # INTEGER, Counter32, Gauge32, Counter64
OCTET_TAGS = {"4", "4x"}  # OCTET STRING, plain or hex-encoded in the recording


RECORDINGS = recordings_dir()
pytestmark = pytest.mark.skipif(
    RECORDINGS is None and os.environ.get("CI", "").lower() != "true",
    reason="../shared/fixtures/snmprec not found (set FLEETROOM_SHARED)")


def text(rec: dict[str, tuple[str, str]], oid: str) -> str | None:
    if oid not in rec:
        return None
    tag, value = rec[oid]
    return bytes.fromhex(value).decode("latin-1") if tag.endswith("x") else value


def device_of(name: str) -> dict[str, tuple[str, str]]:
    """The recording that carries the device's system group.

    ``x@Context.snmprec`` is the snmpsim convention for the same agent answering in
    SNMP context ``Context`` (community ``x@Context``); its system group lives in
    ``x.snmprec``.
    """
    assert RECORDINGS is not None
    return load(RECORDINGS / (name.split("@", 1)[0].removesuffix(".snmprec") + ".snmprec"))


# MANIFEST.tsv vendor column, copied by hand, with the profile each recording must get.
EXPECTED: dict[str, tuple[str, str]] = {
    "brother.snmprec": ("Brother", "brother"),
    "canonprinter_d1180.snmprec": ("Canon", "canon"),
    "canonprinter_lbp.snmprec": ("Canon", "canon"),
    "canonprinter_mf.snmprec": ("Canon", "canon"),
    "canonprinter_tm.snmprec": ("Canon", "canon"),
    "dell-laser.snmprec": ("Dell", "dell"),
    "dell-laser_color.snmprec": ("Dell", "dell"),
    "dell-laser_mfp.snmprec": ("Dell", "dell"),
    "developprinter.snmprec": ("Develop (Konica Minolta OEM)", "develop"),
    "epson-scanner_ds-860.snmprec": ("Epson (scanner)", "epson-scanner"),
    "epson.snmprec": ("Epson", "epson"),
    "fujifilmprinter_c7580.snmprec": ("Fujifilm", "fujifilm"),
    "gestetner.snmprec": ("Gestetner (Ricoh OEM)", "gestetner"),
    "jetdirect.snmprec": ("HP", "hp"),
    # See DEVIATIONS: sysObjectID 1.3.6.1.4.1.1347.41 is Kyocera's.
    "jetdirect_1.snmprec": ("HP", "kyocera"),
    "jetdirect_2.snmprec": ("HP", "hp"),
    "jetdirect_context.snmprec": ("HP", "hp"),
    "jetdirect_context@Jetdirect.snmprec": ("HP", "hp"),
    "jetdirect_m130nw.snmprec": ("HP", "hp"),
    "jetdirect_supplies_context.snmprec": ("HP", "hp"),
    "jetdirect_supplies_context@Jetdirect.snmprec": ("HP", "hp"),
    "konica.snmprec": ("Konica Minolta", "konica-minolta"),
    "konica_2.snmprec": ("Konica Minolta", "konica-minolta"),
    "kyocera.snmprec": ("Kyocera", "kyocera"),
    "lanier.snmprec": ("Lanier (Ricoh OEM)", "lanier"),
    "lexmarkprinter.snmprec": ("Lexmark", "lexmark"),
    "nrg.snmprec": ("NRG (Ricoh OEM)", "nrg"),
    "okilan.snmprec": ("OKI", "oki"),
    "ricoh.snmprec": ("Ricoh", "ricoh"),
    "ricoh_aficio.snmprec": ("Ricoh", "ricoh"),
    "ricoh_mpc3002.snmprec": ("Ricoh", "ricoh"),
    "samsungprinter_c.snmprec": ("Samsung", "samsung"),
    "samsungprinter_clx.snmprec": ("Samsung", "samsung"),
    "samsungprinter_ml.snmprec": ("Samsung", "samsung"),
    "samsungprinter_s.snmprec": ("Samsung", "samsung"),
    "samsungprinter_scx.snmprec": ("Samsung", "samsung"),
    "sharp.snmprec": ("Sharp", "sharp"),
    "sharp_mx2614n.snmprec": ("Sharp", "sharp"),
    "sharp_mxc301w.snmprec": ("Sharp", "sharp"),
    "sharp_mxm266nv.snmprec": ("Sharp", "sharp"),
    # e-STUDIO305CS answers with Lexmark's sysObjectID (1.3.6.1.4.1.641.2.…).
    "toshiba-tec_estudio305.snmprec": ("Toshiba TEC", "toshiba-estudio-lexmark"),
    "toshiba-tec_ev4.snmprec": ("Toshiba TEC", "toshiba-tec-label"),
    "toshiba-tec_fv4.snmprec": ("Toshiba TEC", "toshiba-tec-label"),
    "toshiba-tec_sx5t.snmprec": ("Toshiba TEC", "toshiba-tec-label"),
    "tsc.snmprec": ("TSC (label)", "tsc"),
    "xerox.snmprec": ("Xerox", "xerox"),
    # sysDescr "FUJI XEROX …" under enterprise 297 (Fuji Xerox).
    "xerox_apeosport.snmprec": ("Xerox", "fujixerox"),
    "xerox_color.snmprec": ("Xerox", "xerox"),
    "xerox_docuprint.snmprec": ("Xerox", "fujixerox"),
    "xerox_phaser.snmprec": ("Xerox", "xerox"),
    "zebra.snmprec": ("Zebra (label)", "zebra"),
}

# Which vendor literals a MANIFEST vendor may come out as (brand families).
FAMILY: dict[str, set[str]] = {
    "Brother": {"Brother"},
    "Canon": {"Canon"},
    "Dell": {"Dell"},
    "Develop (Konica Minolta OEM)": {"Develop"},
    "Epson": {"Epson"},
    "Epson (scanner)": {"Epson"},
    "Fujifilm": {"FUJIFILM"},
    "Gestetner (Ricoh OEM)": {"Gestetner"},
    "HP": {"HP"},
    "Konica Minolta": {"Konica Minolta"},
    "Kyocera": {"Kyocera"},
    "Lanier (Ricoh OEM)": {"Lanier"},
    "Lexmark": {"Lexmark"},
    "NRG (Ricoh OEM)": {"NRG"},
    "OKI": {"OKI"},
    "Ricoh": {"Ricoh"},
    "Samsung": {"Samsung"},
    "Sharp": {"Sharp"},
    "Toshiba TEC": {"Toshiba TEC"},
    "TSC (label)": {"TSC"},
    "Xerox": {"Xerox", "Fuji Xerox"},
    "Zebra (label)": {"Zebra"},
}

# Where the evidence in the recording overrides MANIFEST's vendor column (which is
# the LibreNMS OS name the file was recorded for).
DEVIATIONS = {
    # sysObjectID 1.3.6.1.4.1.1347.41 is Kyocera's (Datadog kyocera-printer.yaml,
    # Observium os kyocera); Kyocera network cards report a JetDirect-style sysDescr
    # with "ROM J.sp.00" (Observium CE definitions: os kyocera matches it, os jetdirect
    # excludes it).  RFC 3418: sysObjectID is the vendor's authoritative identification.
    "jetdirect_1.snmprec": "Kyocera",
}

LABEL_PRINTERS = {"zebra", "tsc", "toshiba-tec-label"}
SCANNERS = {"epson-scanner"}
BASE = {"snmpv2-mib", "host-resources", "printer-mib", "generic-printer"}


@pytest.fixture(scope="module")
def ps() -> ProfileSet:
    return ProfileSet.load()


def _manifest() -> dict[str, str]:
    assert RECORDINGS is not None
    with (RECORDINGS / "MANIFEST.tsv").open(encoding="utf-8", newline="") as f:
        return {row["file"]: row["vendor"] for row in csv.DictReader(f, delimiter="\t")}


def test_table_covers_every_recording_and_matches_manifest():
    assert RECORDINGS is not None
    on_disk = {p.name for p in RECORDINGS.glob("*.snmprec")}
    manifest = _manifest()
    assert set(manifest) == on_disk
    assert set(EXPECTED) == on_disk, "add the new recording to EXPECTED by hand"
    for name, (vendor, _) in EXPECTED.items():
        assert manifest[name] == vendor, name
    assert set(FAMILY) >= set(manifest.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_choose_profile(ps: ProfileSet, name: str):
    manifest_vendor, expected = EXPECTED[name]
    rec = device_of(name)
    m = choose_profile(ps, text(rec, SYS_OBJECT_ID), text(rec, SYS_DESCR))
    assert m is not None, f"{name}: no profile matched"
    assert m.name == expected, f"{name}: {m.reason}"
    resolved = ps.resolve(m.name)
    vendor = resolved.identity["vendor"][0].value
    allowed = {DEVIATIONS[name]} if name in DEVIATIONS else FAMILY[manifest_vendor]
    assert vendor in allowed
    if expected in LABEL_PRINTERS:
        assert resolved.device_kind == "label-printer"
    elif expected in SCANNERS:
        assert resolved.device_kind == "scanner"
    else:
        assert resolved.device_kind in {"printer", "mfp"}


# Devices from the public LibreNMS test set (librenms/librenms tests/snmpsim, same
# commit as the shared fixtures) that are not among the shared recordings: their
# sysObjectID and sysDescr, copied by hand.
PUBLIC_CASES = [
    ("utax.snmprec", "1.3.6.1.4.1.1347.41", "TA_UTAX Printing System", "utax"),
    ("savin_c4503.snmprec", "1.3.6.1.4.1.367.1.1",
     "SAVIN MP C4503 1.18 / SAVIN Network Printer C model / SAVIN Network Scanner C model",
     "savin"),
    ("ricoh_mpc2503.snmprec", "1.3.6.1.4.1.367.1.1",
     "RICOH MP C2503 1.35 / RICOH Network Printer C model / RICOH Network Scanner C model"
     " / RICOH Network Facsimile C model", "ricoh"),
    ("toshiba-tec_estudio2505.snmprec", "1.3.6.1.4.1.1129.2.3.58.2",
     "TOSHIBA e-STUDIO2505AC", "toshiba-estudio"),
    ("zebra_1.snmprec", "1.3.6.1.4.1.10642.1.1", "Zebra Wired", "zebra"),
    ("dell-laser_s5830dn.snmprec", "1.3.6.1.4.1.674.10898.2.100.100.51.1094474004",
     "Dell S5830dn version NH62.YS.N636 kernel 3.0.0 All-N-1", "dell"),
    ("fujifilmprinter_c810.snmprec", "1.3.6.1.4.1.297.1.11.93.2.1.3.5.5",
     "FUJIFILM ApeosPro C810", "fujifilm"),
    ("konica_c250i.snmprec", "1.3.6.1.4.1.18334.1.1.1.2.1.181.2.4",
     "KONICA MINOLTA bizhub C250i", "konica-minolta"),
    ("samsungprinter_m4080fx.snmprec", "1.3.6.1.4.1.236.11.5.11.62.1",
     "Samsung M4080FX; V11.01.03.04_02-27-2017;Engine V1.00.06 01-19-2017_V1.00;NIC ;S/N ",
     "samsung"),
    ("xerox_workcentre.snmprec", "1.3.6.1.4.1.253.8.62.1.20.6.34.2.1",
     "Xerox WorkCentre 6605DN; Network 90.66, Controller 201305012030", "xerox"),
    ("jetdirect_m880.snmprec", "1.3.6.1.4.1.11.2.3.9.1",
     "HP ETHERNET MULTI-ENVIRONMENT,ROM none,JETDIRECT,JD149,EEPROM JDI99999999", "hp"),
    ("brother_hl5370dw.snmprec", "1.3.6.1.4.1.2435.2.3.9.1",
     "Brother NC-6800h, Firmware Ver.1.01  (08.12.12),MID 84UB05", "brother"),
]


@pytest.mark.parametrize(("origin", "oid", "descr", "expected"), PUBLIC_CASES,
                         ids=[c[0] for c in PUBLIC_CASES])
def test_choose_profile_public_cases(ps: ProfileSet, origin, oid, descr, expected):
    m = choose_profile(ps, oid, descr)
    assert m is not None
    assert m.name == expected, f"{origin}: {m.reason}"


def _vendor_rules(ps: ProfileSet, profile: str):
    """(kind, oid, rule) for every OID rule that a vendor (non-base) profile contributes."""
    r = ps.resolve(profile)
    for field, rules in r.identity.items():
        for rule in rules:
            if rule.oid and r.origin_of(rule) not in BASE:
                yield "identity", field, rule
    for name, counters in r.counters.items():
        for rule in counters:
            if r.origin_of(rule) not in BASE:
                yield "counter", name, rule
    for d in r.decoders:
        yield "decoder", d.decoder, d
    for t in r.counter_tables:
        yield "table", t.root, t


def test_every_vendor_oid_in_a_recording_has_a_plausible_type(ps: ProfileSet):
    """An OID a vendor rule reads, where a recording of that vendor has it, must hold
    the kind of value the rule expects: text for identity, a non-negative integer for
    a counter, octets for a decoder, integer values under a counter table."""
    assert RECORDINGS is not None
    checked: list[str] = []
    for name, (_, profile) in sorted(EXPECTED.items()):
        rec = load(RECORDINGS / name)
        for kind, what, rule in _vendor_rules(ps, profile):
            where = f"{name} {profile} {kind} {what}"
            if kind == "table":
                rows = {o: tv for o, tv in rec.items() if o.startswith(rule.root + ".")}
                if not rows:
                    continue
                values = {o: tv for o, tv in rows.items()
                          if o.startswith(f"{rule.root}.{rule.value_column}.")}
                assert values, f"{where}: rows but no value column {rule.value_column}"
                for o, (tag, value) in values.items():
                    assert tag in INTEGER_TAGS, f"{where} {o}"
                    assert int(value) >= 0, f"{where} {o}"
                for col in (rule.key_column, rule.label_column):
                    if col is not None:
                        for o, (tag, _) in rows.items():
                            if o.startswith(f"{rule.root}.{col}."):
                                assert tag in OCTET_TAGS | INTEGER_TAGS, f"{where} {o}"
                mapped = set()
                for o in values:
                    index = o[len(f"{rule.root}.{rule.value_column}."):]
                    key = index
                    if rule.key == "column":
                        key = text(rec, f"{rule.root}.{rule.key_column}.{index}") or index
                    if key in rule.map:
                        mapped.add(key)
                assert mapped, f"{where}: no row of the recording is mapped"
                checked.append(where)
                continue
            if rule.oid not in rec:
                continue
            tag, value = rec[rule.oid]
            if kind == "identity":
                assert tag in OCTET_TAGS, f"{where}: tag {tag}"
                got = text(rec, rule.oid) or ""
                if rule.regex:
                    assert re.search(rule.regex, got), f"{where}: {rule.regex!r} !~ {got!r}"
            elif kind == "counter":
                assert tag in INTEGER_TAGS, f"{where}: tag {tag}"
                assert int(value) >= 0, where
            else:
                assert tag in OCTET_TAGS, f"{where}: tag {tag}"
            checked.append(where)
    # The recordings must actually exercise the vendor rules: identity OIDs of Brother,
    # Canon, Gestetner/Ricoh, HP, Konica, Kyocera, Sharp, Xerox, Zebra, Epson scanner,
    # HP counters and the Sharp counter table.
    assert len(checked) >= 30, checked
    kinds = {c.split()[2] for c in checked}
    assert {"identity", "counter", "table"} <= kinds


def test_sharp_table_rows_carry_the_labels_the_map_relies_on():
    """The Sharp map is keyed by row index; the device's own label column says what a
    row is.  Every mapped index present in a Sharp recording must carry the label the
    map's comment names."""
    assert RECORDINGS is not None
    labels = {
        "1.4.60": "Prints", "1.4.61": "Black & White Print Count",
        "1.4.63": "Full Color Print Count", "1.4.75": "Duplex", "4.4.60": "Copies",
        "4.4.61": "Black & White Copy Count", "4.4.63": "Full Color Copy Count",
        "4.4.64": "Two Color Copy Count", "4.4.80": "Single Color Copy Count",
        "5.4.61": "Black & White Total Count", "5.4.63": "Full Color Total Count",
        "5.4.64": "Two Color Total Count", "5.4.80": "Single Color Total Count",
        "6.4.70": "Document Feeder",
    }
    root = "1.3.6.1.4.1.2385.1.1.19.2.1"
    table = ProfileSet.load().resolve("sharp").counter_tables[0]
    assert table.root == root
    assert set(table.map) == set(labels)
    seen = 0
    for name in ("sharp.snmprec", "sharp_mxm266nv.snmprec"):
        rec = load(RECORDINGS / name)
        for index, label in labels.items():
            got = text(rec, f"{root}.4.{index}")
            if got is not None:
                assert got == label, (name, index)
                seen += 1
    assert seen == 23  # 14 mapped rows in the MX-3570N walk, 9 in the MX-M266NV walk


# Non-printers from the same public LibreNMS test set: a profile match makes the agent
# treat a device as a printer, so these must match nothing.
NOT_PRINTERS = [
    ("epson-projector_eb-4770w.snmprec", "1.3.6.1.4.1.1248.4.1", "EPSON Network Projector"),
    ("procurve.snmprec", "1.3.6.1.4.1.11.2.3.7.8.5.2", "HP Stack, revision KA.00.00.0000"),
    ("hpe-ilo.snmprec", "1.3.6.1.4.1.232.9.4.10", "Integrated Lights-Out 4 2.50 Sep 23 2016"),
    ("dell-os10.snmprec", "1.3.6.1.4.1.674.11000.5000.100.2.1.7",
     "Dell EMC Networking OS10 Enterprise."),
]


@pytest.mark.parametrize(("origin", "oid", "descr"), NOT_PRINTERS,
                         ids=[c[0] for c in NOT_PRINTERS])
def test_non_printers_match_no_profile(ps: ProfileSet, origin, oid, descr):
    m = choose_profile(ps, oid, descr)
    assert m is None, f"{origin}: {m}"

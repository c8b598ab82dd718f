"""The synthetic recordings: reproducible, labelled, and true to RFC 3805 semantics."""

from __future__ import annotations

import pytest
from fleetroom_fleetsim import synthetic as syn

PRT_SUP = "1.3.6.1.2.1.43.11.1.1"
PRT_COL = "1.3.6.1.2.1.43.12.1.1"
PRT_ALERT = "1.3.6.1.2.1.43.18.1.1"
HR_TYPE = "1.3.6.1.2.1.25.3.2.1.2"
ERR_STATE = "1.3.6.1.2.1.25.3.5.1.2.1"
HR_STATUS = "1.3.6.1.2.1.25.3.2.1.5.1"
PRINTER_TYPE = "1.3.6.1.2.1.25.3.1.5"


def column(rec, prefix: str) -> dict[str, object]:
    """{row index: value} under a column OID."""
    p = prefix + "."
    return {oid[len(p):]: rec.expected(oid)[1] for oid in rec.rows if oid.startswith(p)}


def test_committed_files_match_the_generator(synthetic_dir):
    assert syn.check(synthetic_dir) == [], "run: uv run python -m fleetroom_fleetsim.synthetic"


def test_readme_labels_every_file(synthetic_dir):
    readme = (synthetic_dir / "README.md").read_text()
    assert "SYNTHETIC" in readme
    for path in synthetic_dir.glob("*.snmprec"):
        assert f"`{path.stem}`" in readme, path.name


def test_every_file_is_sorted_parseable_and_says_synthetic(synthetic_dir, recording):
    files = sorted(synthetic_dir.glob("*.snmprec"))
    assert len(files) >= 19
    for path in files:
        lines = path.read_text(encoding="latin-1").splitlines()
        oids = [line.split("|", 1)[0] for line in lines]
        assert all(line.count("|") >= 2 for line in lines), path.name
        assert oids == sorted(oids, key=syn.oid_key), f"{path.name} not in SNMP order"
        assert len(set(oids)) == len(oids), path.name
        rec = recording(path.stem)
        assert b"SYNTHETIC" in rec.expected("1.3.6.1.2.1.1.4.0")[1]
        assert rec.expected("1.3.6.1.2.1.1.6.0")[1].startswith(b"SYNTHETIC")
        # sysDescr must look like the vendor's, not like a fixture
        assert b"SYNTHETIC" not in rec.expected("1.3.6.1.2.1.1.1.0")[1].upper()


def test_build_recording_sorts_numerically_and_rejects_duplicates():
    text = syn.build_recording([("1.3.6.1.10", syn.integer(1)), ("1.3.6.1.9", syn.octets("a|b"))])
    assert text == "1.3.6.1.9|4x|617c62\n1.3.6.1.10|2|1\n"
    with pytest.raises(ValueError, match="duplicate"):
        syn.build_recording([("1.3.6.1", syn.integer(1)), ("1.3.6.1", syn.integer(2))])
    with pytest.raises(ValueError, match="out of range"):
        syn.counter32(2**32)
    assert syn.octets(" padded").tag == "4x"
    assert syn.octets("plain text").tag == "4"
    assert syn.numeric("65", 10, 0.5).text == "initial=10,rate=0.5"


def test_error_state_bit_zero_is_the_msb_of_the_first_octet():
    assert syn.error_state("lowPaper") == b"\x80\x00"
    assert syn.error_state("lowToner") == b"\x20\x00"
    assert syn.error_state("jammed", "lowToner") == b"\x24\x00"
    assert syn.error_state("serviceRequested") == b"\x01\x00"
    assert syn.error_state("inputTrayMissing") == b"\x00\x80"
    with pytest.raises(ValueError):
        syn.error_state("inputTrayMissing", octets_count=1)


def test_demo_fleet_spans_the_vendors_and_one_non_printer(synthetic_dir, recording):
    demo = sorted(p.stem for p in synthetic_dir.glob("demo-*.snmprec"))
    printers, others = [], []
    for stem in demo:
        rec = recording(stem)
        is_printer = rec.rows.get(HR_TYPE + ".1", ("", ""))[1] == PRINTER_TYPE
        (printers if is_printer else others).append(stem)
    assert others == ["demo-switch-cisco"]
    assert 10 <= len(printers) <= 12
    switch = recording("demo-switch-cisco")
    assert all(oid.startswith("1.3.6.1.2.1.1.") for oid in switch.rows)
    pens = {recording(s).expected("1.3.6.1.2.1.1.2.0")[1].split(".")[7] for s in printers}
    assert {"11", "1347", "367", "1602", "253", "18334", "2385", "2435", "641", "10642"} <= pens
    descrs = " ".join(recording(s).expected("1.3.6.1.2.1.1.1.0")[1].decode() for s in printers)
    for vendor in ("HP ", "KYOCERA", "UTAX", "RICOH", "Gestetner", "Canon", "Xerox",
                   "KONICA MINOLTA", "SHARP", "Brother", "Lexmark", "ZT411"):
        assert vendor in descrs


def test_demo_printers_have_complete_printer_mib(synthetic_dir, recording):
    needed = {
        "sysDescr": "1.3.6.1.2.1.1.1.0", "ifPhysAddress": "1.3.6.1.2.1.2.2.1.6.1",
        "hrDeviceDescr": "1.3.6.1.2.1.25.3.2.1.3.1", "hrPrinterStatus": "1.3.6.1.2.1.25.3.5.1.1.1",
        "errorState": ERR_STATE, "serial": "1.3.6.1.2.1.43.5.1.1.17.1",
        "lifeCount": "1.3.6.1.2.1.43.10.2.1.4.1.1", "counterUnit": "1.3.6.1.2.1.43.10.2.1.3.1.1",
        "markTech": "1.3.6.1.2.1.43.10.2.1.2.1.1",
        "processColorants": "1.3.6.1.2.1.43.10.2.1.6.1.1",
        "console": "1.3.6.1.2.1.43.16.5.1.2.1.1",
    }
    for path in synthetic_dir.glob("demo-*.snmprec"):
        if path.stem == "demo-switch-cisco":
            continue
        rec = recording(path.stem)
        for name, oid in needed.items():
            assert oid in rec.rows, f"{path.stem} lacks {name}"
        assert rec.expected(needed["counterUnit"])[1] == 7
        assert rec.is_numeric(needed["lifeCount"]), "demo counters rise under snmpsim"
        assert rec.expected(needed["lifeCount"])[0] == "Counter32"
        assert len(rec.expected(needed["ifPhysAddress"])[1]) == 6
        assert len(rec.expected(ERR_STATE)[1]) in (1, 2)
        for col in (2, 3, 4, 5, 6, 7, 8, 9):
            assert column(rec, f"{PRT_SUP}.{col}.1"), f"{path.stem} supplies column {col}"
        assert column(rec, "1.3.6.1.2.1.43.8.2.1.10.1"), "trays"
        assert column(rec, "1.3.6.1.2.1.43.9.2.1.5.1"), "output bins"
        assert column(rec, "1.3.6.1.2.1.43.13.4.1.9.1"), "media paths"


def test_colour_comes_from_the_colorant_table_not_the_row_order(synthetic_dir, recording):
    colour_devices = 0
    for path in synthetic_dir.glob("*.snmprec"):
        rec = recording(path.stem)
        colorants = column(rec, f"{PRT_COL}.4.1")
        links = column(rec, f"{PRT_SUP}.3.1")
        for row, idx in links.items():
            assert idx == 0 or str(idx) in colorants, f"{path.stem} supply {row} -> {idx}"
        if len(colorants) >= 4:
            colour_devices += 1
            consumables = [int(r) for r, c in column(rec, f"{PRT_SUP}.4.1").items() if c == 3]
            order = [links[str(r)] for r in sorted(consumables) if links[str(r)]]
            assert order[:4] != sorted(order[:4]), f"{path.stem}: supplies in colorant order"
    assert colour_devices >= 6


def test_sentinels_are_covered(synthetic_dir, recording):
    levels, maxes, tray_levels, waste = set(), set(), set(), []
    duplex = False
    for path in synthetic_dir.glob("demo-*.snmprec"):
        rec = recording(path.stem)
        lv = column(rec, f"{PRT_SUP}.9.1")
        levels |= set(lv.values())
        maxes |= set(column(rec, f"{PRT_SUP}.8.1").values())
        tray_levels |= set(column(rec, "1.3.6.1.2.1.43.8.2.1.10.1").values())
        for row, cls in column(rec, f"{PRT_SUP}.4.1").items():
            if cls == 4:
                waste.append(lv[row])
        duplex |= 3 in column(rec, "1.3.6.1.2.1.43.13.4.1.9.1").values()
    assert {-3, -2} <= levels
    assert -2 in maxes
    assert -3 in tray_levels
    assert -3 in waste
    assert duplex


def test_alerts_are_consistent_with_status_and_error_bits(recording):
    rec = recording("alerts")
    severity = column(rec, f"{PRT_ALERT}.2.1")
    code = column(rec, f"{PRT_ALERT}.7.1")
    group = column(rec, f"{PRT_ALERT}.4.1")
    group_index = column(rec, f"{PRT_ALERT}.5.1")
    assert [r for r, s in severity.items() if s == 3] == ["12"]
    assert code["12"] == 8  # jam
    warnings = [r for r, s in severity.items() if s == 4]
    assert len(warnings) == 2
    colorant_names = column(rec, f"{PRT_COL}.4.1")
    for r in warnings:
        assert code[r] == 1104  # markerTonerAlmostEmpty; 1101 would be markerTonerEmpty
        assert group[r] == 11  # markerSupplies
        supply = str(group_index[r])
        assert rec.expected(f"{PRT_SUP}.9.1.{supply}")[1] <= 10
        colorant = rec.expected(f"{PRT_SUP}.3.1.{supply}")[1]
        assert colorant_names[str(colorant)] in (b"cyan", b"yellow")
    assert rec.expected(ERR_STATE)[1] == syn.error_state("jammed", "lowToner")
    assert rec.expected(HR_STATUS)[1] == 5
    assert rec.expected("1.3.6.1.2.1.25.3.5.1.1.1")[1] == 1
    assert rec.expected("1.3.6.1.2.1.43.5.1.1.18.1")[1] >= 1
    assert rec.expected("1.3.6.1.2.1.43.5.1.1.19.1")[1] >= 15
    assert rec.expected("1.3.6.1.2.1.43.18.1.1.9.1.12")[0] == "Timeticks"

    warn = recording("alerts-warning")
    assert set(column(warn, f"{PRT_ALERT}.2.1").values()) == {4}
    assert warn.expected(ERR_STATE)[1] == syn.error_state("lowToner")
    assert warn.expected(HR_STATUS)[1] == 3


def test_counter_wrap_snapshots(recording):
    before, after = recording("counter-wrap-before"), recording("counter-wrap-wrapped")
    oid = "1.3.6.1.2.1.43.10.2.1.4.1.1"
    b, a = before.expected(oid)[1], after.expected(oid)[1]
    assert b > 2**32 - 100
    assert a < 100
    assert (a - b) % 2**32 == 31
    serial = "1.3.6.1.2.1.43.5.1.1.17.1"
    assert before.expected(serial) == after.expected(serial)
    live = recording("counter-wrap")
    assert live.rows[oid] == ("65:numeric", "initial=4294967266,rate=1,max=4294967296,wrap=1")
    assert live.rows["1.3.6.1.2.1.1.3.0"] == ("67:numeric", "initial=0,rate=100")


def test_v1_missing_lacks_only_the_serial(recording):
    rec = recording("v1-missing")
    assert "1.3.6.1.2.1.43.5.1.1.17.1" not in rec.rows
    for oid in ("1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.43.5.1.1.16.1", "1.3.6.1.2.1.43.10.2.1.4.1.1",
                "1.3.6.1.2.1.25.3.2.1.3.1"):
        assert oid in rec.rows

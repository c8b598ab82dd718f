"""The README's run command, end to end: the simulated fleet is scanned and read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fleetroom_fleetsim.synthetic import DATA_DIR


def test_demo_scans_the_whole_synthetic_fleet(tmp_path):
    env = {**os.environ, "FLEETROOM_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "fleetroom_fleetsim.demo", "--once",
                        "--base", "127.0.31.1"], capture_output=True, text=True, env=env,
                       timeout=240, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    recordings = sorted(DATA_DIR.glob("demo-*.snmprec"))
    printers = [r for r in recordings if "switch" not in r.name]
    summary = f"{len(recordings)} address(es), {len(printers)} printer(s), 1 other device(s)"
    assert summary in p.stdout + p.stderr
    lines = (tmp_path / "data" / "demo-readings.jsonl").read_text().splitlines()
    readings = [json.loads(line) for line in lines]
    assert len(readings) == len(printers)
    # Each device's serial is the one its recording holds (prtGeneralSerialNumber).
    expected = set()
    for rec in printers:
        for line in rec.read_text(encoding="latin-1").splitlines():
            oid, tag, value = line.split("|", 2)
            if oid == "1.3.6.1.2.1.43.5.1.1.17.1":
                expected.add(bytes.fromhex(value).decode() if tag.endswith("x") else value)
    assert {r["identity"]["serial"] for r in readings} == expected
    assert "skipped: not a printer" in p.stdout + p.stderr

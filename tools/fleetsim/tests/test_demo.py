"""The README's run command, end to end: fleet scanned, server seeded, readings imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fleetroom_fleetsim.synthetic import DATA_DIR


def _serial_of(recording) -> str:
    for line in recording.read_text(encoding="latin-1").splitlines():
        oid, tag, value = line.split("|", 2)
        if oid == "1.3.6.1.2.1.43.5.1.1.17.1":
            return bytes.fromhex(value).decode() if tag.endswith("x") else value
    raise AssertionError(f"{recording} has no prtGeneralSerialNumber")


def test_demo_seeds_the_server_imports_the_fleet_and_serves(tmp_path):
    """The README's run command at this stage: tenants, users per role, readings
    imported half per customer site, the server answering on FLEETROOM_BIND."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    env = {**os.environ, "FLEETROOM_DATA_DIR": str(data), "COLUMNS": "200",
           "FLEETROOM_BIND": f"127.0.0.1:{port}"}
    p = subprocess.run([sys.executable, "-m", "fleetroom_fleetsim.demo", "--once",
                        "--base", "127.0.33.1"], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert f"Fleetroom is running at http://127.0.0.1:{port}/" in out
    recordings = sorted(DATA_DIR.glob("demo-*.snmprec"))
    n_printers = len([r for r in recordings if "switch" not in r.name])
    assert f"{len(recordings)} address(es), {n_printers} printer(s), 1 other device(s)" in out
    assert "skipped: not a printer" in out
    for username in ("operator", "dealer-admin", "technician", "customer-admin",
                     "customer-viewer"):
        assert f"  {username} " in out
    fleetroom = str(Path(sys.executable).parent / "fleetroom")
    status = subprocess.run([fleetroom, "status", "--json"],
                            capture_output=True, text=True, env=env, check=True)
    counts = json.loads(status.stdout)
    printers = [r for r in sorted(DATA_DIR.glob("demo-*.snmprec")) if "switch" not in r.name]
    assert counts["devices"] == len(printers)
    assert counts["readings"] == len(printers)
    assert counts["users"] == 5
    # Every printer's serial arrived, split across the two customer sites.
    site_lines = [json.loads(line)["identity"]["serial"]
                  for n in (1, 2)
                  for line in (data / f"demo-readings-site{n}.jsonl").read_text().splitlines()]
    assert sorted(site_lines) == sorted(_serial_of(r) for r in printers)

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


def test_demo_enrolls_agents_that_send_the_fleet_over_https(tmp_path):
    """The README's run command: tenants, users per role, one agent per customer site
    enrolled with a token and sending over HTTPS; every printer of the fleet arrives
    (serials checked against the recordings), the switch does not."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    data = tmp_path / "data"
    env = {**os.environ, "FLEETROOM_DATA_DIR": str(data), "COLUMNS": "200",
           "FLEETROOM_BIND": f"127.0.0.1:{ports[0]}",
           "FLEETROOM_AGENTS_BIND": f"127.0.0.1:{ports[1]}",
           "FLEETROOM_DEMO_STATUS_PORT": "0"}
    p = subprocess.run([sys.executable, "-m", "fleetroom_fleetsim.demo", "--once",
                        "--base", "127.0.33.1"], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-5000:]
    assert f"Fleetroom is running at http://127.0.0.1:{ports[0]}/" in out
    assert f"sending over HTTPS to https://127.0.0.1:{ports[1]}/" in out
    for username in ("operator", "dealer-admin", "technician", "customer-admin",
                     "customer-viewer"):
        assert f"  {username} " in out
    fleetroom = str(Path(sys.executable).parent / "fleetroom")
    server_env = {k: v for k, v in env.items() if not k.startswith("FLEETROOM_")}
    server_env["FLEETROOM_DATA_DIR"] = str(data)
    status = subprocess.run([fleetroom, "status", "--json"],
                            capture_output=True, text=True, env=server_env, check=True)
    counts = json.loads(status.stdout)
    printers = [r for r in sorted(DATA_DIR.glob("demo-*.snmprec")) if "switch" not in r.name]
    assert counts["agents"] == 2
    assert counts["devices"] == len(printers)
    assert counts["readings"] == len(printers)
    assert counts["users"] == 5
    # Every printer's serial arrived through the agents, split across the two sites.
    import sqlite3

    with sqlite3.connect(data / "fleetroom.sqlite3") as db:
        rows = db.execute("SELECT d.serial, t.name FROM fleet_device d "
                          "JOIN tenancy_tenant t ON t.id = d.tenant_id").fetchall()
        agents = db.execute("SELECT COUNT(*) FROM agents_receivedbatch").fetchone()[0]
    assert sorted(serial for serial, _ in rows) == sorted(_serial_of(r) for r in printers)
    assert len({site for _, site in rows}) == 2
    assert agents >= 2
    # Each agent's data directory holds its identity, readable by its user only.
    for n in (1, 2):
        identity = data / f"agent-site{n}" / "identity.json"
        assert identity.stat().st_mode & 0o077 == 0

"""``make demo``: a simulated printer fleet on loopback, scanned by the agent.

Each SYNTHETIC demo recording becomes one device at its own loopback address
(127.0.10.x, served by net-snmp's snmpd), so the scan is what a technician does on
a customer network: a range, a community, a table.  The fleet keeps running after
the scan so the printed commands can be tried, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .snmpd_fleet import SnmpdFleet, SnmpdUser
from .synthetic import DATA_DIR

DEMO_USER = SnmpdUser()


def _agent() -> str:
    exe = Path(sys.executable).parent / "fleetroom-agent"
    return str(exe) if exe.exists() else "fleetroom-agent"


def main(argv: list[str] | None = None) -> int:
    """Start the fleet, scan it, then wait (or stop at once with ``--once``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="Stop after the scan.")
    parser.add_argument("--base", default=os.environ.get("FLEETROOM_DEMO_BASE", "127.0.10.1"),
                        help="First loopback address of the fleet.")
    args = parser.parse_args(argv)

    data_dir = Path(os.environ.get("FLEETROOM_DATA_DIR", "data"))
    data_dir.mkdir(parents=True, exist_ok=True)
    recordings = sorted(DATA_DIR.glob("demo-*.snmprec"))
    print(f"Starting {len(recordings)} simulated devices (SYNTHETIC recordings from "
          f"{DATA_DIR}) on loopback from {args.base} …", flush=True)
    with SnmpdFleet(recordings, base=args.base) as fleet:
        targets = [ep.host if ep.port == 161 else ep.address for ep in fleet.endpoints]
        first, last = fleet.endpoints[0], fleet.endpoints[-1]
        scan_args = ([f"{first.host}-{last.host.rsplit('.', 1)[1]}"]
                     if first.port == 161 else targets)
        print(f"Fleet ready: {first.address} … {last.address}\n", flush=True)
        cmd = [_agent(), "scan", *scan_args, "--community", "public", "--verbose"]
        print("$ " + " ".join(cmd[1:]).replace(_agent(), "fleetroom-agent"),
              flush=True)
        scan = subprocess.run(cmd, check=False)  # noqa: S603
        readings = data_dir / "demo-readings.jsonl"
        with readings.open("w", encoding="utf-8") as out:
            subprocess.run([*cmd[:-1], "--json"], stdout=out, check=False,  # noqa: S603
                           stderr=subprocess.DEVNULL)
        ep = fleet.endpoints[0].address
        user = DEMO_USER
        print(f"""
Readings saved as one JSON document per line: {readings}

Try, while the fleet runs (from this directory):
  uv run fleetroom-agent probe {ep} --community public
  uv run fleetroom-agent probe {ep} --v3-user {user.name} --auth-proto SHA256 \\
      --auth-key {user.auth_key} --priv-proto AES256 --priv-key {user.priv_key}
  uv run fleetroom-agent walk {ep} --redact --out /tmp/device.snmprec
  uv run fleetroom-agent profiles list
""", flush=True)
        if scan.returncode != 0 or args.once:
            return scan.returncode
        print("Fleet running; press Ctrl-C to stop.", flush=True)
        try:
            while all(Path(f"/proc/{pid}").exists() for pid in fleet.pids):
                time.sleep(1)
            print("a simulator process ended; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping the fleet", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

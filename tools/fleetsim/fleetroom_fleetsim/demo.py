"""``make demo``: the whole product on one machine, from nothing.

1. a simulated printer fleet on loopback: each SYNTHETIC demo recording becomes one
   device at its own 127.0.10.x address, served by net-snmp's snmpd;
2. the agent scans it, as a technician would at a customer site (range, community);
3. the server gets a data directory (``fleetroom init``), its tables, the demo
   tenants and one user per role with fresh random passwords (``seed_demo``);
4. the readings are imported, half to each demo customer's site;
5. ``fleetroom serve`` runs until Ctrl-C; the URL and the logins are printed.

The server is driven through its ``fleetroom`` command (as an operator would), so
this package does not import the server.  ``FLEETROOM_DATA_DIR`` and
``FLEETROOM_BIND`` are honoured, so a second demo can run beside a first one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .snmpd_fleet import SnmpdFleet, SnmpdUser
from .synthetic import DATA_DIR

DEMO_USER = SnmpdUser()
SERVER_START_TIMEOUT_S = 90.0


def _exe(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def _run(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, text=True, check=True, **kw)  # noqa: S603


def _scan(fleet: SnmpdFleet, readings: Path) -> int:
    """Scan the fleet once: the table on the screen, the readings into ``readings``."""
    first, last = fleet.endpoints[0], fleet.endpoints[-1]
    scan_args = ([f"{first.host}-{last.host.rsplit('.', 1)[1]}"] if first.port == 161
                 else [ep.address for ep in fleet.endpoints])
    print(f"Fleet ready: {first.address} … {last.address}\n", flush=True)
    cmd = [_exe("fleetroom-agent"), "scan", *scan_args, "--community", "public",
           "--verbose", "--out", str(readings)]
    print("$ fleetroom-agent " + " ".join(cmd[2:]), flush=True)
    return subprocess.run(cmd, check=False).returncode  # noqa: S603


def _prepare_server(data_dir: Path, readings: Path, env: dict[str, str]) -> dict[str, Any]:
    """Config, tables, tenants and users; the readings split between the two sites."""
    fleetroom = _exe("fleetroom")
    _run([fleetroom, "init"], env)
    _run([fleetroom, "manage", "migrate", "--noinput", "-v", "0"], env)
    seeded: dict[str, Any] = json.loads(
        _run([fleetroom, "manage", "seed_demo", "--json"], env, capture_output=True).stdout)
    sites = seeded["sites"]
    lines = [ln for ln in readings.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for i, site in enumerate(sites):
        part = data_dir / f"demo-readings-site{i + 1}.jsonl"
        part.write_text("".join(ln + "\n" for ln in lines[i::len(sites)]), encoding="utf-8")
        print(f"$ fleetroom import-readings {part.name} --tenant {site['path']}"
              f"   # {site['name']}", flush=True)
        _run([fleetroom, "import-readings", str(part), "--tenant", site["path"]], env)
    return seeded


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def _print_logins(url: str, seeded: dict[str, Any], fleet: SnmpdFleet) -> None:
    print(f"\nFleetroom is running at {url}\n\nLogins (fresh passwords on every run):",
          flush=True)
    for a in seeded["accounts"]:
        print(f"  {a['username']:16} {a['password']}   {a['role_label']}, {a['tenant']}")
    ep = fleet.endpoints[0].address
    user = DEMO_USER
    print(f"""
Platform and dealer accounts must set up two-factor authentication (an authenticator
app) at their first login: that is the default policy for those roles.

While the fleet runs you can also try the agent (from this directory):
  uv run fleetroom-agent probe {ep} --community public
  uv run fleetroom-agent probe {ep} --v3-user {user.name} --auth-proto SHA256 \\
      --auth-key {user.auth_key} --priv-proto AES256 --priv-key {user.priv_key}
  uv run fleetroom-agent walk {ep} --redact --out /tmp/device.snmprec
""", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Fleet, scan, server; then wait for Ctrl-C (or stop at once with ``--once``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true",
                        help="Stop once the server has answered its health check.")
    parser.add_argument("--base", default=os.environ.get("FLEETROOM_DEMO_BASE", "127.0.10.1"),
                        help="First loopback address of the fleet.")
    args = parser.parse_args(argv)

    data_dir = Path(os.environ.get("FLEETROOM_DATA_DIR", "data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLEETROOM_DATA_DIR": str(data_dir)}
    bind = os.environ.get("FLEETROOM_BIND", "127.0.0.1:8000")
    recordings = sorted(DATA_DIR.glob("demo-*.snmprec"))
    print(f"Starting {len(recordings)} simulated devices (SYNTHETIC recordings from "
          f"{DATA_DIR}) on loopback from {args.base} …", flush=True)
    with SnmpdFleet(recordings, base=args.base) as fleet:
        readings = data_dir / "demo-readings.jsonl"
        if _scan(fleet, readings) != 0:
            return 1
        print(f"\nReadings saved as one JSON document per line: {readings}\n", flush=True)
        seeded = _prepare_server(data_dir, readings, env)
        url = f"http://{bind}/"
        server = subprocess.Popen([_exe("fleetroom"), "serve", "--bind", bind],  # noqa: S603
                                  env=env)
        try:
            if not _wait_healthy(url, server):
                print(f"the server did not come up at {url}", file=sys.stderr)
                return 1
            _print_logins(url, seeded, fleet)
            if args.once:
                return 0
            print("Fleet and server running; press Ctrl-C to stop.", flush=True)
            while server.poll() is None and all(Path(f"/proc/{p}").exists()
                                                for p in fleet.pids):
                time.sleep(1)
            print("a process ended; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
            return 0
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    sys.exit(main())

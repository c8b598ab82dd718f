"""``make demo``: the whole product on one machine, from nothing.

1. a simulated printer fleet on loopback: each SYNTHETIC demo recording becomes one
   device at its own 127.0.10.x address, served by net-snmp's snmpd;
2. the server gets a data directory (``fleetroom init``), a private CA and an HTTPS
   certificate for its agent listener (``fleetroom tls-selfsigned``), its tables,
   the demo tenants and one user per role with fresh random passwords
   (``seed_demo``), and one enrollment token per demo site (``agent_token``);
3. ``fleetroom serve`` runs the web UI (plain HTTP on loopback), the HTTPS listener
   for agents and the background worker;
4. one agent per site — as a technician would install it at each customer site —
   is enrolled with its token (``fleetroom-agent enroll``, trusting the private CA)
   and started (``fleetroom-agent run``) on half of the fleet each; they find the
   printers, read them and send the readings over HTTPS;
5. once the server holds a reading of every device, the URL and the logins are
   printed; everything runs until Ctrl-C.

The server and the agents are driven through their commands (as an operator and a
technician would), so this package imports neither.  ``FLEETROOM_DATA_DIR`` and
``FLEETROOM_BIND`` are honoured, so a second demo can run beside a first one (the
agents' HTTPS port is the web port + 443, or ``FLEETROOM_AGENTS_BIND``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

from .snmpd_fleet import SnmpdFleet, SnmpdUser
from .synthetic import DATA_DIR

DEMO_USER = SnmpdUser()
SERVER_START_TIMEOUT_S = 90.0
READINGS_TIMEOUT_S = 120.0
"""The agents' startup scan reads a dozen devices in seconds; this is slack."""


def _exe(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def _run(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, text=True, check=True, **kw)  # noqa: S603


def _prepare_server(env: dict[str, str]) -> dict[str, Any]:
    """Config, certificate, tables, tenants, users, and an enrollment token per site."""
    fleetroom = _exe("fleetroom")
    _run([fleetroom, "init"], env)
    _run([fleetroom, "tls-selfsigned", "127.0.0.1", "localhost"], env, capture_output=True)
    _run([fleetroom, "manage", "migrate", "--noinput", "-v", "0"], env)
    # A signed profile bundle for the agents' profile check (the worker renews it weekly).
    _run([fleetroom, "manage", "publish_profiles"], env, capture_output=True)
    seeded: dict[str, Any] = json.loads(
        _run([fleetroom, "manage", "seed_demo", "--json"], env, capture_output=True).stdout)
    for site in seeded["sites"]:
        site_id = site["path"].strip("/").split("/")[-1]
        out = _run([fleetroom, "manage", "agent_token", "--tenant", site_id, "--json",
                    "--label", f"demo agent {site['name']}"], env, capture_output=True).stdout
        site["token"] = json.loads(out)["token"]
    return seeded


def _agent_config(directory: Path, targets: list[str], status_port: int) -> Path:
    """A site's agent.toml: its half of the fleet, the demo community, a status page."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    lines = [f'data_dir = "{directory}"', "", "[scan]",
             "targets = [" + ", ".join(f'"{t}"' for t in targets) + "]", "",
             "[schedule]", "max_status_poll_s = 30", "", "[status_page]",
             f"port = {status_port}", "", "[[credentials]]", 'name = "demo-public"',
             'version = "2c"', 'community = "public"', ""]
    path = directory / "agent.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    return path


class _Agent(NamedTuple):
    """One started demo agent."""

    site: str
    proc: subprocess.Popen[bytes]
    status_port: int
    password: str
    directory: Path


def _start_agents(data_dir: Path, seeded: dict[str, Any], fleet: SnmpdFleet, agents_url: str,
                  env: dict[str, str]) -> list[_Agent]:
    """Enroll and start one agent per site, each on its share of the fleet."""
    agent = _exe("fleetroom-agent")
    ca = str(data_dir / "tls" / "ca.pem")
    sites = seeded["sites"]
    started = []
    agent_env = {k: v for k, v in env.items() if not k.startswith("FLEETROOM_")}
    for i, site in enumerate(sites):
        directory = data_dir / f"agent-site{i + 1}"
        targets = [ep.address for ep in fleet.endpoints[i::len(sites)]]
        base_port = int(env.get("FLEETROOM_DEMO_STATUS_PORT", "8765"))
        port = base_port + i if base_port else 0  # 0: any free port (tests)
        config = _agent_config(directory, targets, port)
        print(f"$ fleetroom-agent enroll --server {agents_url} --token … --ca-file {ca} "
              f"--data-dir {directory.name}   # {site['name']}", flush=True)
        enrolled = subprocess.run(  # noqa: S603
            [agent, "enroll", "--server", agents_url, "--token", site["token"], "--ca-file", ca,
             "--data-dir", str(directory), "--force"],
            env=agent_env, text=True, capture_output=True, check=False)
        if enrolled.returncode != 0:
            raise RuntimeError(f"enrolling the agent for {site['name']} failed: "
                               f"{enrolled.stderr.strip() or enrolled.stdout.strip()}")
        password = secrets.token_urlsafe(9)
        _run([agent, "set-password", "--data-dir", str(directory), "--password-stdin"],
             agent_env, input=password + "\n", capture_output=True)
        log = (directory / "agent.log").open("ab")
        proc = subprocess.Popen([agent, "run", "--config", str(config)],  # noqa: S603
                                env=agent_env, stdout=log, stderr=subprocess.STDOUT)
        started.append(_Agent(site["name"], proc, port, password, directory))
    return started


def _json_of(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(cmd, env=env, text=True, capture_output=True, check=False)  # noqa: S603
    try:
        return dict(json.loads(out.stdout))
    except ValueError:
        return {}


def _wait_for_readings(env: dict[str, str], agent_dirs: list[Path],
                       timeout_s: float) -> dict[str, Any]:
    """Until every agent finished its startup scan, its outbox is empty, and the
    server holds (normalised) as many readings as the agents stored."""
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {}
    agent = _exe("fleetroom-agent")
    while time.monotonic() < deadline:
        states = [_json_of([agent, "status", "--json", "--data-dir", str(d)], env)
                  for d in agent_dirs]
        scanned = all((s.get("jobs") or {}).get("rediscovery", {}).get("outcome") == "done"
                      and s.get("queue_items") == 0 for s in states)
        stored = sum(int(v) for s in states for k, v in (s.get("counts") or {}).items()
                     if k in {"put:readings", "put:alerts"})
        status = _json_of([_exe("fleetroom"), "status", "--json"], env)
        if scanned and stored and (status.get("readings") or 0) >= stored:
            break
        time.sleep(1)
    return status


def _wait_healthy(url: str, server: subprocess.Popen[bytes],
                  context: ssl.SSLContext | None = None) -> bool:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2,  # noqa: S310
                                        context=context) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def _print_logins(url: str, seeded: dict[str, Any], fleet: SnmpdFleet,
                  agents: list[_Agent], status: dict[str, Any]) -> None:
    print(f"\nFleetroom is running at {url}\n\nLogins (fresh passwords on every run):",
          flush=True)
    for a in seeded["accounts"]:
        print(f"  {a['username']:16} {a['password']}   {a['role_label']}, {a['tenant']}")
    print(f"\nServer: {status.get('agents')} agent(s), {status.get('devices')} device(s), "
          f"{status.get('readings')} reading(s) so far (fleetroom status --json).")
    print("\nAgents (each with its local status page, user-less, password only):")
    for a in agents:
        print(f"  {a.site:24} http://127.0.0.1:{a.status_port}/   password {a.password}   "
              f"data {a.directory}")
    ep = fleet.endpoints[0].address
    user = DEMO_USER
    print(f"""
Platform and dealer accounts must set up two-factor authentication (an authenticator
app) at their first login: that is the default policy for those roles.

While it runs you can also try (from this directory):
  uv run fleetroom-agent status --json --data-dir {agents[0].directory}
  uv run fleetroom-agent probe {ep} --community public
  uv run fleetroom-agent probe {ep} --v3-user {user.name} --auth-proto SHA256 \\
      --auth-key {user.auth_key} --priv-proto AES256 --priv-key {user.priv_key}
""", flush=True)


def _agents_bind(bind: str) -> str:
    host, _, port = bind.rpartition(":")
    return os.environ.get("FLEETROOM_AGENTS_BIND") or f"{host}:{int(port) + 443}"


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    """Fleet, server, agents; then wait for Ctrl-C (or stop at once with ``--once``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true",
                        help="Stop once every device has a reading on the server.")
    parser.add_argument("--base", default=os.environ.get("FLEETROOM_DEMO_BASE", "127.0.10.1"),
                        help="First loopback address of the fleet.")
    args = parser.parse_args(argv)

    data_dir = Path(os.environ.get("FLEETROOM_DATA_DIR", "data")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    bind = os.environ.get("FLEETROOM_BIND", "127.0.0.1:8000")
    agents_bind = _agents_bind(bind)
    tls = data_dir / "tls"
    env = {**os.environ, "FLEETROOM_DATA_DIR": str(data_dir),
           "FLEETROOM_TLS_CERT": str(tls / "server.pem"),
           "FLEETROOM_TLS_KEY": str(tls / "server.key"), "FLEETROOM_WEB_TLS": "false",
           "FLEETROOM_AGENTS_BIND": agents_bind, "FLEETROOM_AGENTS_URL": f"https://{agents_bind}"}
    setup_env = {k: v for k, v in env.items()
                 if k not in {"FLEETROOM_TLS_CERT", "FLEETROOM_TLS_KEY", "FLEETROOM_WEB_TLS",
                              "FLEETROOM_AGENTS_BIND", "FLEETROOM_AGENTS_URL"}}
    recordings = sorted(DATA_DIR.glob("demo-*.snmprec"))
    print(f"Starting {len(recordings)} simulated devices (SYNTHETIC recordings from "
          f"{DATA_DIR}) on loopback from {args.base} …", flush=True)
    with SnmpdFleet(recordings, base=args.base) as fleet:
        first, last = fleet.endpoints[0], fleet.endpoints[-1]
        print(f"Fleet ready: {first.address} … {last.address}\n", flush=True)
        seeded = _prepare_server(setup_env)
        url = f"http://{bind}/"
        server = subprocess.Popen([_exe("fleetroom"), "serve", "--bind", bind],  # noqa: S603
                                  env=env)
        procs = [server]
        try:
            agents_url = f"https://{agents_bind}/"
            ca = ssl.create_default_context(cafile=str(tls / "ca.pem"))
            for where, context in ((url, None), (agents_url, ca)):
                if not _wait_healthy(where, server, context):
                    print(f"the server did not come up at {where}", file=sys.stderr)
                    return 1
            agents = _start_agents(data_dir, seeded, fleet, f"https://{agents_bind}", env)
            procs += [a.proc for a in agents]
            print(f"\nAgents are reading the fleet and sending over HTTPS to "
                  f"https://{agents_bind}/ …", flush=True)
            status = _wait_for_readings(
                setup_env, [a.directory for a in agents], READINGS_TIMEOUT_S)
            _print_logins(url, seeded, fleet, agents, status)
            if args.once:
                return 0 if status.get("readings") else 1
            print("Fleet, server and agents running; press Ctrl-C to stop.", flush=True)
            while all(p.poll() is None for p in procs) and all(
                    Path(f"/proc/{p}").exists() for p in fleet.pids):
                time.sleep(1)
            print("a process ended; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
            return 0
        finally:
            _stop(list(reversed(procs)))


if __name__ == "__main__":
    sys.exit(main())

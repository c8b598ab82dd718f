"""``make bench``: the agent against the net-snmp CLI on a simulated fleet, one run.

Usage::

    uv run python -m bench.run                 # 1,000 devices (or $FLEETROOM_BENCH_DEVICES)
    uv run python -m bench.run --quick         # 100 devices, a /20 sweep: a try-out
    uv run python -m bench.run --devices 2000 --sections poll,status

What it does, in order (each measurement in a fresh worker process, see
:mod:`bench.worker`):

1. starts ``--devices`` simulated printers (net-snmp ``snmpd`` via
   :class:`fleetroom_fleetsim.snmpd_fleet.SnmpdFleet`, SYNTHETIC demo recordings,
   the non-printer switch left out unless ``--include-switch``) from 127.0.20.1;
2. ``poll``: ``run_scan`` and ``Reader.read`` over the known endpoints (ours) and
   ``snmpget``/``snmpbulkwalk`` (reference), v2c and SNMPv3 authPriv;
3. ``status``: one ``status_check`` per device (ours) and one ``snmpget`` (reference);
4. ``pdu``: the same clients on a subset through a counting UDP relay
   (:mod:`bench.relay`) on 127.0.30.x: PDUs per device on the wire;
5. ``discovery``: the sweep of 127.21.0.0/16 with a few answering snmpd endpoints,
   ``run_scan`` of the /16 and of a /22 of it (it sweeps, then reads), the /22
   without a sweep (a full pysnmp identify GET per address, as ``run_scan`` did
   before it swept), and ``snmpget -t 1 -r 0`` over a sample, first with nothing
   listening on the empty addresses, then with a silent socket on each
   (:mod:`bench.silent`).

Results: a Markdown table on stdout and in ``bench/out/results-<date>.md``, raw
figures in ``bench/out/results-<date>.json``.  Traffic goes to 127.0.0.0/8 only.
Every process started here is stopped on exit, on error, on Ctrl-C and on
SIGTERM/SIGHUP.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fleetroom_fleetsim.snmpd_fleet import Endpoint, SnmpdFleet, loopback_addresses

from .common import (
    OUT_DIR,
    REPO,
    SNMP_PORT,
    Children,
    cores,
    dump_json,
    interrupts_unwind,
    loadavg,
    machine,
    process_cpu_s,
    system_cpu_s,
)
from .fleet import TIMING, DeviceSpec, demo_recordings, device_specs
from .report import render
from .silent import per_process

SECTIONS = ("poll", "status", "pdu", "discovery")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def log(msg: str) -> None:
    """Progress for humans, on stderr (stdout carries the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Config:
    """The run's parameters, after ``--quick`` and the environment are applied."""

    devices: int
    quick: bool
    sections: tuple[str, ...]
    include_switch: bool
    recordings_dirs: list[Path]
    base: str
    relay_base: str
    relay_devices: int
    sweep_network: str
    scan_network: str
    cli_sample: int
    out: Path


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Command line (and ``FLEETROOM_BENCH_DEVICES``) to a :class:`Config`."""
    p = argparse.ArgumentParser(prog="python -m bench.run",
                                description="Fleetroom agent vs. net-snmp CLI benchmark.")
    p.add_argument("--devices", type=int, default=None,
                   help="fleet size (default $FLEETROOM_BENCH_DEVICES or 1000; 100 with "
                        "--quick)")
    p.add_argument("--quick", action="store_true",
                   help="try-out size: 100 devices, sweep a /20, scan a /24, sample 64")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--include-switch", action="store_true",
                   help="keep the non-printer demo-switch-cisco in the fleet")
    p.add_argument("--recordings", type=Path, action="append", default=[],
                   help="also serve the .snmprec files of this directory (repeatable), "
                        "e.g. /work/shared/fixtures/snmprec")
    p.add_argument("--base", default="127.0.20.1", help="first address of the fleet")
    p.add_argument("--relay-base", default="127.0.30.1",
                   help="first address of the counting relay's fronts")
    p.add_argument("--relay-devices", type=int, default=None,
                   help="devices counted through the relay (default 100; 24 with --quick)")
    p.add_argument("--sweep", default=None, help="range to sweep (default 127.21.0.0/16)")
    p.add_argument("--scan-range", default=None,
                   help="range for run_scan without a sweep (default 127.21.4.0/22)")
    p.add_argument("--cli-sample", type=int, default=None,
                   help="addresses for the snmpget-per-address reference (default 256)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="where results are written")
    a = p.parse_args(argv)
    env_devices = os.environ.get("FLEETROOM_BENCH_DEVICES")
    devices = a.devices or (100 if a.quick else int(env_devices) if env_devices else 1000)
    sections = tuple(s.strip() for s in a.sections.split(",") if s.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    cfg = Config(
        devices=devices, quick=a.quick, sections=sections, include_switch=a.include_switch,
        recordings_dirs=a.recordings, base=a.base, relay_base=a.relay_base,
        relay_devices=a.relay_devices or (24 if a.quick else 100),
        sweep_network=a.sweep or ("127.21.0.0/20" if a.quick else "127.21.0.0/16"),
        scan_network=a.scan_range or ("127.21.4.0/24" if a.quick else "127.21.4.0/22"),
        cli_sample=a.cli_sample or (64 if a.quick else 256), out=a.out)
    sweep_net = ipaddress.ip_network(cfg.sweep_network)
    scan_net = ipaddress.ip_network(cfg.scan_network)
    if not (isinstance(sweep_net, ipaddress.IPv4Network)
            and isinstance(scan_net, ipaddress.IPv4Network)
            and sweep_net.subnet_of(LOOPBACK) and scan_net.subnet_of(sweep_net)):
        p.error("the sweep range must be inside 127.0.0.0/8 and the scan range inside it")
    if sweep_net.prefixlen < 16:
        p.error("the sweep range may be at most a /16")
    if devices < 1 or cfg.relay_devices < 1:
        p.error("--devices and --relay-devices must be at least 1")
    return cfg


# --- running workers --------------------------------------------------------------------


class Runner:
    """Runs worker tasks one at a time, each bounded in time, and notes snmpd's CPU."""

    def __init__(self, children: Children, workdir: Path,
                 snmpd_pids: Callable[[], list[int]]) -> None:
        self.children = children
        self.workdir = workdir
        self.snmpd_pids = snmpd_pids
        self.failures: list[str] = []

    def run(self, name: str, task: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run one task; its result dict, or ``{"error": …}`` (also noted in failures)."""
        task = {**task, "max_seconds": max(10.0, timeout - 20)}
        task_path = self.workdir / f"{name}.task.json"
        result_path = self.workdir / f"{name}.result.json"
        log_path = self.workdir / f"{name}.log"
        dump_json(task_path, task)
        pids = self.snmpd_pids()
        snmpd_before = process_cpu_s(pids)
        sys_before, load_before = system_cpu_s(), loadavg()
        log(f"{name} …")
        t0 = time.monotonic()
        with log_path.open("w") as out:
            proc = self.children.start(
                [sys.executable, "-m", "bench.worker", str(task_path), str(result_path)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                rc: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
            self.children.stop(proc)
        snmpd_cpu = process_cpu_s(pids) - snmpd_before
        sys_after = system_cpu_s()
        worker_wall = time.monotonic() - t0
        if rc != 0 or not result_path.exists():
            tail = log_path.read_text(errors="replace")[-800:].strip()
            why = f"timed out after {timeout:.0f} s" if rc is None else f"exit status {rc}"
            error = f"{name}: worker {why}: {tail}"
            self.failures.append(error)
            log(error)
            return {"error": why}
        result: dict[str, Any] = json.loads(result_path.read_text())
        result["snmpd_cpu_s"] = snmpd_cpu
        # What other programs took while the worker ran: CPU charged to processes,
        # minus this worker (self + children) and snmpd.
        ours = result.get("process_cpu_s", 0.0) + result.get("process_children_cpu_s", 0.0)
        result["worker_wall_s"] = worker_wall
        result["other_cpu_s"] = max(
            0.0, sys_after["processes"] - sys_before["processes"] - snmpd_cpu - ours)
        result["interrupt_cpu_s"] = sys_after["interrupts"] - sys_before["interrupts"]
        result["steal_cpu_s"] = sys_after["steal"] - sys_before["steal"]
        result["loadavg"] = [load_before, loadavg()]
        log(f"{name} done in {worker_wall:.1f} s (other programs used "
            f"{result['other_cpu_s']:.1f} CPU s meanwhile)")
        return result


def _poll_timeout(devices: int) -> float:
    """Seconds a full poll of ``devices`` may take (generous: ~4 devices/s)."""
    return 120.0 + devices / 4


# --- sections -------------------------------------------------------------------------


def run_poll(runner: Runner, specs: list[DeviceSpec]) -> dict[str, Any]:
    """Section 1: full poll, ours then the CLI, v2c then v3."""
    devices = [s.to_json() for s in specs]
    out: dict[str, Any] = {}
    for version in ("v2c", "v3"):
        out[version] = {
            "ours": runner.run(f"poll-ours-{version}",
                               {"task": "scan-poll", "version": version, "devices": devices},
                               _poll_timeout(len(specs))),
            "reader": runner.run(f"poll-reader-{version}",
                                 {"task": "reader-poll", "version": version,
                                  "devices": devices},
                                 _poll_timeout(len(specs))),
            "cli": runner.run(f"poll-cli-{version}",
                              {"task": "cli-poll", "version": version, "devices": devices},
                              _poll_timeout(len(specs))),
        }
    return out


def run_status(runner: Runner, specs: list[DeviceSpec]) -> dict[str, Any]:
    """Section 2: the status cycle, ours then ``snmpget``."""
    devices = [s.to_json() for s in specs]
    timeout = 120.0 + len(specs) / 10
    out: dict[str, Any] = {}
    for version in ("v2c", "v3"):
        out[version] = {
            "ours": runner.run(f"status-ours-{version}",
                               {"task": "status", "version": version, "devices": devices},
                               timeout),
            "cli": runner.run(f"status-cli-{version}",
                              {"task": "cli-status", "version": version, "devices": devices},
                              timeout),
        }
    return out


def run_pdu(runner: Runner, specs: list[DeviceSpec], cfg: Config) -> dict[str, Any]:
    """Section 2b: packet counts through the relay, on a subset of devices."""
    subset = specs[:min(cfg.relay_devices, len(specs), 254)]
    fronts = loopback_addresses(cfg.relay_base, len(subset))
    for host in fronts:
        if ipaddress.ip_address(host) not in LOOPBACK:
            raise ValueError(f"relay address {host} is not loopback")
    relay_config = runner.workdir / "relay.json"
    dump_json(relay_config, {
        "pairs": [{"front": [f, SNMP_PORT], "back": [s.host, s.port]}
                  for f, s in zip(fronts, subset, strict=True)],
        "max_seconds": 1800})
    front_specs = [dataclasses.replace(s, host=f, port=SNMP_PORT).to_json()
                   for f, s in zip(fronts, subset, strict=True)]
    got = runner.run("pdu-count", {"task": "pdu-count", "devices": front_specs,
                                   "relay_config": str(relay_config)},
                     4 * _poll_timeout(len(subset)) + 300)
    got["devices"] = len(subset)
    return got


@contextlib.contextmanager
def silent_farm(children: Children, workdir: Path, network: str,
                exclude: Sequence[str]) -> Any:
    """A socket that never answers on every address of ``network`` but ``exclude``."""
    net = ipaddress.ip_network(network)
    hosts = net.num_addresses - 2 - len(exclude)
    shards = -(-hosts // per_process())
    config = workdir / "silent.json"
    dump_json(config, {"network": network, "exclude": list(exclude), "port": SNMP_PORT,
                       "shards": shards, "max_seconds": 3600})
    procs = [children.start([sys.executable, "-m", "bench.silent", str(config), str(i)],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
             for i in range(shards)]
    bound = skipped = 0
    try:
        for proc in procs:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            line = proc.stdout.readline().split() if ready else []
            if len(line) != 3 or line[0] != "ready":
                raise RuntimeError("a silent-listener process did not start")
            bound += int(line[1])
            skipped += int(line[2])
        log(f"silent listeners: {bound:,} sockets in {shards} processes "
            f"({skipped} addresses already taken)")
        yield {"bound": bound, "skipped": skipped, "processes": shards}
    finally:
        for proc in procs:
            children.stop(proc)


def run_discovery(runner: Runner, children: Children, cfg: Config) -> dict[str, Any]:
    """Section 3: sweep vs. run_scan vs. snmpget, without and with silent listeners."""
    sweep_net = ipaddress.ip_network(cfg.sweep_network)
    scan_net = ipaddress.ip_network(cfg.scan_network)
    recs = demo_recordings(include_switch=True)
    bases = [scan_net.network_address + 10,
             sweep_net.network_address + sweep_net.num_addresses // 2 + 1,
             sweep_net.broadcast_address - 6]
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        endpoints: list[Endpoint] = []
        for i, base in enumerate(bases):
            group = [recs[(i * 4 + k) % len(recs)] for k in range(4)]
            fleet = stack.enter_context(SnmpdFleet(group, count=4, base=str(base)))
            endpoints += fleet.endpoints
        answering = [ep.host for ep in endpoints]
        out["answering"] = answering
        n_hosts = sweep_net.num_addresses - 2
        step = max(1, n_hosts // cfg.cli_sample)
        sample = [str(sweep_net.network_address + 1 + i * step + step // 2)
                  for i in range(min(cfg.cli_sample, n_hosts))]
        common = {"port": SNMP_PORT}
        tasks = {
            "sweep": ({"task": "sweep", "network": cfg.sweep_network, **common}, 300.0),
            "scan_all": ({"task": "scan-range", "network": cfg.sweep_network, **common},
                         900.0),
            "scan": ({"task": "scan-range", "network": cfg.scan_network, **common}, 900.0),
            "identify": ({"task": "identify-range", "network": cfg.scan_network, **common},
                         900.0),
            "cli": ({"task": "cli-sweep", "sample": sample, "extrapolate_to": n_hosts,
                     **common}, 900.0),
        }
        for mode in ("icmp", "silent"):
            with contextlib.ExitStack() as farm_stack:
                if mode == "silent":
                    out["silent_listeners"] = farm_stack.enter_context(
                        silent_farm(children, runner.workdir, cfg.sweep_network, answering))
                out[mode] = {key: runner.run(f"discovery-{mode}-{key}", task, timeout)
                             for key, (task, timeout) in tasks.items()}
    return out


# --- main -----------------------------------------------------------------------------


def recordings_for(cfg: Config) -> list[Path]:
    """The demo recordings, plus any ``--recordings`` directories."""
    recs = demo_recordings(include_switch=cfg.include_switch)
    for d in cfg.recordings_dirs:
        recs += sorted(d.glob("*.snmprec"))
    return recs


def write_results(results: dict[str, Any], cfg: Config) -> Path:
    """JSON and Markdown into ``cfg.out``; returns the Markdown path."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    stem = f"results-{time.strftime('%Y-%m-%d')}" + ("-quick" if cfg.quick else "")
    json_path = cfg.out / f"{stem}.json"
    results["json_path"] = str(json_path.relative_to(REPO)
                               if json_path.is_relative_to(REPO) else json_path)
    dump_json(json_path, results)
    md_path = cfg.out / f"{stem}.md"
    md_path.write_text(render(results))
    return md_path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected sections and report."""
    cfg = parse_args(argv)
    started = time.monotonic()
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="fleetroom-bench-"))
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "machine": machine()}
    try:
        with interrupts_unwind(), contextlib.ExitStack() as stack:
            stack.callback(children.stop_all)
            recs = recordings_for(cfg)
            fleet: SnmpdFleet | None = None
            specs: list[DeviceSpec] = []
            if {"poll", "status", "pdu"} & set(cfg.sections):
                log(f"starting {cfg.devices:,} simulated devices from {cfg.base} …")
                fleet = stack.enter_context(SnmpdFleet(recs, count=cfg.devices, base=cfg.base))
                specs = device_specs(fleet.endpoints)
                log(f"fleet ready: {len(fleet.pids)} snmpd processes")
            runner = Runner(children, workdir, lambda: fleet.pids if fleet else [])
            results["config"] = {
                "devices": cfg.devices, "quick": cfg.quick, "sections": list(cfg.sections),
                "recordings": [p.name for p in recs], "switch_included": cfg.include_switch,
                "fleet_first": specs[0].host if specs else "-",
                "fleet_last": specs[-1].host if specs else "-",
                "snmpd_processes": len(fleet.pids) if fleet else 0,
                "profiles": sorted({s.profile for s in specs}),
                "timing": dataclasses.asdict(TIMING),
                "reads_in_flight": _reads_in_flight(),
                "cli_parallel": 2 * cores(), "sweep_network": cfg.sweep_network,
                "scan_network": cfg.scan_network, "cli_sample": cfg.cli_sample,
                "relay_devices": cfg.relay_devices,
            }
            if "poll" in cfg.sections:
                results["poll"] = run_poll(runner, specs)
            if "status" in cfg.sections:
                results["status"] = run_status(runner, specs)
            if "pdu" in cfg.sections:
                results["pdu"] = run_pdu(runner, specs, cfg)
            if fleet is not None:
                stack.pop_all().close()  # stop the fleet before the discovery section
                stack.callback(children.stop_all)
            if "discovery" in cfg.sections:
                results["discovery"] = run_discovery(runner, children, cfg)
            results["failures"] = runner.failures
    except KeyboardInterrupt:
        log("interrupted: every process this run started has been stopped")
        return 130
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = time.monotonic() - started
    md_path = write_results(results, cfg)
    sys.stdout.write(md_path.read_text())
    log(f"written {md_path} and {md_path.with_suffix('.json')}")
    return 1 if results["failures"] else 0


def _reads_in_flight() -> int:
    from fleetroom_agent.scan import READS_PER_CORE

    return READS_PER_CORE * (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())

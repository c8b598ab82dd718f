"""One measurement in a fresh process: ``python -m bench.worker TASK.json RESULT.json``.

A fresh process per measurement means its CPU time (``getrusage``) and its peak
RSS (``VmHWM``) belong to that measurement only, and nothing one measurement warms
up (pysnmp's engine, caches, the allocator) flatters the next.  Tasks:

``scan-poll``
    ours: :func:`fleetroom_agent.scan.run_scan` over the fleet's address ranges
    (its sweep probe and identify GET included), default concurrency and timing.
``reader-poll``
    ours over the known endpoints: ``Reader.read`` per device (identify GET, then
    the profile's GET and one ``walk_many`` stream over its subtrees),
    ``READS_PER_CORE`` per core at once, no sweep.
``cli-poll``
    reference: per device one ``snmpget`` of the same scalars and one
    ``snmpbulkwalk -Cr<max-repetitions>`` per subtree, ``2 x cores`` devices at once.
``status`` / ``cli-status``
    one :func:`~fleetroom_agent.collect.status.status_check` per device (a cold pass,
    then the timed warm pass), and ``snmpget`` of the same OIDs.
``sweep`` / ``scan-range`` / ``identify-range`` / ``cli-sweep``
    :func:`~fleetroom_agent.discovery.sweep.sweep` over a range; ``run_scan`` over a
    range (it sweeps first, then reads the responders); the same without a sweep (a
    full pysnmp identify GET per address, as ``run_scan`` did before it swept);
    ``snmpget -t 1 -r 0`` over a sample of addresses.
``pdu-count``
    all of the above on a subset of devices through :mod:`bench.relay`, which counts
    the packets on the wire (not timed).

Every loop is bounded: operations carry the agent's own timeouts, each task an
overall ``max_seconds`` deadline, each command a subprocess timeout.
"""

from __future__ import annotations

import asyncio
import json
import select
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .common import Children, CpuTimes, cores, dump_json, peak_rss_mb, rss_mb, udp_counters
from .fleet import (
    TIMING,
    DeviceSpec,
    compact_ranges,
    credential,
    netsnmp_args,
    netsnmp_common,
    profiles,
)

STARTED = time.monotonic()
START_CPU = CpuTimes.now()
PROBES_IN_FLIGHT = 512
"""Identify GETs ``run_scan`` kept in flight before it swept first (its own constant
then, since removed from the agent)."""
CMD_TIMEOUT = 60.0
"""Seconds any one net-snmp command may take (it has -t/-r; this is a backstop)."""


# --- small helpers ------------------------------------------------------------------


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1]}


def _measure_start() -> tuple[float, CpuTimes, dict[str, int]]:
    return time.monotonic(), CpuTimes.now(), udp_counters()


def _measure_end(start: tuple[float, CpuTimes, dict[str, int]], devices: int,
                 cpu_of: str) -> dict[str, Any]:
    """Wall, CPU (``self`` or ``children``), per-device figures and UDP counters."""
    t0, c0, u0 = start
    wall = time.monotonic() - t0
    cpu = CpuTimes.now().since(c0)
    u1 = udp_counters()
    counted = cpu.self_s if cpu_of == "self" else cpu.children_s
    return {
        "devices": devices,
        "wall_s": wall,
        "cpu_s": counted,
        "cpu_of": cpu_of,
        "cpu_self_s": cpu.self_s,
        "cpu_children_s": cpu.children_s,
        "devices_per_s": devices / wall if wall > 0 else 0.0,
        "cpu_ms_per_device": counted / devices * 1000 if devices else 0.0,
        "devices_per_cpu_s": devices / counted if counted > 0 else 0.0,
        "udp_in": u1["InDatagrams"] - u0["InDatagrams"],
        "udp_out": u1["OutDatagrams"] - u0["OutDatagrams"],
        "udp_rcvbuf_errors": u1["RcvbufErrors"] - u0["RcvbufErrors"],
    }


def _process_figures() -> dict[str, Any]:
    import resource

    total = CpuTimes.now().since(START_CPU)
    return {"peak_rss_mb": peak_rss_mb(),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_end_mb": rss_mb(),
            "process_cpu_s": total.self_s, "process_children_cpu_s": total.children_s,
            "process_wall_s": time.monotonic() - STARTED}


def _targets(specs: Sequence[DeviceSpec]) -> list[str]:
    if all(s.port == 161 for s in specs):
        return compact_ranges([s.host for s in specs])
    return [f"{s.host}:{s.port}" for s in specs]


def _device_spec_list(task: dict[str, Any]) -> list[DeviceSpec]:
    return [DeviceSpec.from_json(d) for d in task.get("devices", [])]


# --- ours: full poll ----------------------------------------------------------------


async def _run_scan(targets: list[str], version: str, max_seconds: float) -> Any:
    from fleetroom_agent.collect.credentials import CredentialSet
    from fleetroom_agent.scan import ScanOptions, run_scan

    opts = ScanOptions(targets=targets, credentials=[CredentialSet(credential(version))])
    async with asyncio.timeout(max_seconds):
        return await run_scan(opts, profiles())


def _scan_summary(outcome: Any, specs: Sequence[DeviceSpec]) -> dict[str, Any]:
    """Readings, failures by kind, and whether each device got the expected profile."""
    from fleetroom_agent.collect.reader import Failed, Skipped

    expected = {f"{s.host}:{s.port}" if s.port != 161 else s.host: s.profile for s in specs}
    failed = Counter(x.kind for x in outcome.not_read if isinstance(x, Failed))
    skipped = sum(isinstance(x, Skipped) for x in outcome.not_read)
    mismatched = [r.target for r in outcome.readings
                  if r.profile is None or expected.get(r.target) not in (None, r.profile.name)]
    walk_errors = sum(1 for r in outcome.readings if r.errors)
    no_response = sum(1 for r in outcome.readings
                      for m in r.missing if m.reason in ("noResponse", "no-response"))
    silent = int(getattr(outcome, "silent", 0))
    return {
        "addresses": outcome.addresses,
        "readings": len(outcome.readings),
        "skipped": skipped,
        "silent": silent,
        "failed": dict(failed),
        "timeouts": failed.get("timeout", 0) + (silent if specs else 0),
        "errors": sum(failed.values()) - failed.get("timeout", 0) + walk_errors,
        "readings_with_errors": walk_errors,
        "missing_no_response": no_response,
        "profile_mismatches": len(mismatched),
        "profile_mismatch_sample": mismatched[:5],
        "reading_ms": _percentiles([float(r.duration_ms) for r in outcome.readings]),
        "scan_seconds": outcome.seconds,
    }


def task_scan_poll(task: dict[str, Any]) -> dict[str, Any]:
    """Ours: ``run_scan`` over every device of the fleet."""
    specs = _device_spec_list(task)
    profiles()  # loaded before the clock starts, as a running agent has them
    start = _measure_start()
    outcome = asyncio.run(_run_scan(_targets(specs), task["version"], task["max_seconds"]))
    result = _measure_end(start, len(specs), "self")
    result.update(_scan_summary(outcome, specs))
    return result


async def _reader_poll(specs: Sequence[DeviceSpec], version: str,
                       max_seconds: float) -> _Outcome:
    """``Reader.read`` per device, ``READS_PER_CORE`` per core at once."""
    import os

    from fleetroom_agent.collect.credentials import CredentialMemory, CredentialSet
    from fleetroom_agent.collect.reader import Reader
    from fleetroom_agent.scan import READS_PER_CORE
    from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient
    from fleetroom_agent.snmp.types import Target

    outcome = _Outcome()
    outcome.addresses = len(specs)
    t0 = time.monotonic()
    client = PysnmpClient()
    reader = Reader(client, profiles(), [CredentialSet(credential(version))],
                    CredentialMemory(), TIMING)
    reads = asyncio.Semaphore(READS_PER_CORE * (os.cpu_count() or 1))

    async def one(spec: DeviceSpec) -> None:
        try:
            outcome.add(await reader.read(Target(spec.host, spec.port)))
        finally:
            reads.release()

    try:
        async with asyncio.timeout(max_seconds), asyncio.TaskGroup() as tg:
            for spec in specs:
                await reads.acquire()
                tg.create_task(one(spec))
    finally:
        await client.close()
    outcome.seconds = time.monotonic() - t0
    return outcome


def task_reader_poll(task: dict[str, Any]) -> dict[str, Any]:
    """Ours over the known endpoints: ``Reader.read`` (identify GET, then the
    profile's GET and its ``walk_many`` stream) per device, ``READS_PER_CORE`` per
    core at once -- the same read bound ``run_scan`` uses, without its sweep."""
    specs = _device_spec_list(task)
    profiles()
    start = _measure_start()
    outcome = asyncio.run(_reader_poll(specs, task["version"], task["max_seconds"]))
    result = _measure_end(start, len(specs), "self")
    result.update(_scan_summary(outcome, specs))
    return result


class _Outcome:
    """The parts of ``ScanOutcome`` that :func:`_scan_summary` reads."""

    def __init__(self) -> None:
        self.readings: list[Any] = []
        self.not_read: list[Any] = []
        self.addresses = 0
        self.silent = 0
        self.seconds = 0.0

    def add(self, result: Any) -> None:
        from fleetroom_protocol import Reading

        if isinstance(result, Reading):
            self.readings.append(result)
        else:
            self.not_read.append(result)


# --- the net-snmp reference ---------------------------------------------------------


def _run_cmd(cmd: list[str]) -> tuple[int, int, bool]:
    """(return code, var-bind lines, timed out) of one net-snmp command."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                             timeout=CMD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return -1, 0, True
    lines = sum(1 for ln in out.stdout.splitlines() if ln.startswith("."))
    return out.returncode, lines, "Timeout" in out.stderr


def _cli_pool(jobs: Sequence[Callable[[], list[tuple[int, int, bool]]]],
              parallel: int) -> dict[str, Any]:
    """Run per-device job lists in a thread pool; totals of processes and outcomes."""
    processes = errors = timeouts = lines = 0
    failed_devices = 0
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for outcomes in pool.map(lambda job: job(), jobs):
            bad = False
            for rc, n, timed_out in outcomes:
                processes += 1
                lines += n
                timeouts += timed_out
                errors += (rc != 0 and not timed_out)
                bad = bad or rc != 0 or timed_out
            failed_devices += bad
    return {"processes": processes, "timeouts": timeouts, "errors": errors,
            "failed_devices": failed_devices, "varbind_lines": lines, "parallel": parallel}


def _commands_job(cmds: list[list[str]]) -> Callable[[], list[tuple[int, int, bool]]]:
    """A job running ``cmds`` one after the other, as a script does per device."""
    return lambda: [_run_cmd(c) for c in cmds]


def _poll_commands(spec: DeviceSpec, version: str) -> list[list[str]]:
    base = [*netsnmp_args(version), *netsnmp_common()]
    addr = spec.host if spec.port == 161 else f"{spec.host}:{spec.port}"
    cmds = [["snmpget", *base, addr, *spec.scalars]]
    cmds += [["snmpbulkwalk", *base, f"-Cr{TIMING.max_repetitions}", addr, root]
             for root in spec.walks]
    return cmds


def _status_commands(spec: DeviceSpec, version: str) -> list[list[str]]:
    addr = spec.host if spec.port == 161 else f"{spec.host}:{spec.port}"
    return [["snmpget", *netsnmp_args(version), *netsnmp_common(), addr, *spec.status_oids]]


def _cli_measure(specs: Sequence[DeviceSpec], version: str, kind: str,
                 parallel: int) -> dict[str, Any]:
    make = _poll_commands if kind == "poll" else _status_commands
    jobs = [_commands_job(make(s, version)) for s in specs]
    start = _measure_start()
    totals = _cli_pool(jobs, parallel)
    result = _measure_end(start, len(specs), "children")
    result.update(totals)
    result["processes_per_device"] = totals["processes"] / max(1, len(specs))
    result["cpu_ms_per_process"] = result["cpu_s"] / max(1, totals["processes"]) * 1000
    return result


def task_cli_poll(task: dict[str, Any]) -> dict[str, Any]:
    """Reference: ``snmpget`` + ``snmpbulkwalk`` per subtree, per device."""
    return _cli_measure(_device_spec_list(task), task["version"], "poll",
                        task.get("parallel") or 2 * cores())


def task_cli_status(task: dict[str, Any]) -> dict[str, Any]:
    """Reference: ``snmpget`` of the status OIDs, per device."""
    return _cli_measure(_device_spec_list(task), task["version"], "status",
                        task.get("parallel") or 2 * cores())


# --- ours: status cycle -------------------------------------------------------------


async def _status_pass(client: Any, specs: Sequence[DeviceSpec], version: str,
                       ) -> tuple[Counter[str], list[Any]]:
    from fleetroom_agent.collect.status import status_check
    from fleetroom_agent.snmp.types import SnmpError, Target

    cred = credential(version)
    errors: Counter[str] = Counter()

    async def one(spec: DeviceSpec) -> Any:
        try:
            return await status_check(client, Target(spec.host, spec.port), cred,
                                      profiles().resolve(spec.profile), TIMING)
        except SnmpError as exc:
            errors[exc.kind] += 1
            return None

    prints = await asyncio.gather(*(one(s) for s in specs))
    return errors, list(prints)


def task_status(task: dict[str, Any]) -> dict[str, Any]:
    """Ours: a cold status pass (first contact), then the timed warm pass."""
    from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient

    specs = _device_spec_list(task)
    for s in {s.profile for s in specs}:
        profiles().resolve(s)

    async def go() -> dict[str, Any]:
        client = PysnmpClient()
        out: dict[str, Any] = {}
        try:
            async with asyncio.timeout(task["max_seconds"]):
                start = _measure_start()
                errors, first = await _status_pass(client, specs, task["version"])
                cold = _measure_end(start, len(specs), "self")
                cold.update(errors=sum(errors.values()), timeouts=errors.get("timeout", 0),
                            error_kinds=dict(errors))
                start = _measure_start()
                errors, second = await _status_pass(client, specs, task["version"])
                warm = _measure_end(start, len(specs), "self")
                warm.update(errors=sum(errors.values()), timeouts=errors.get("timeout", 0),
                            error_kinds=dict(errors))
                warm["unchanged"] = sum(1 for a, b in zip(first, second, strict=True)
                                        if a is not None and b is not None
                                        and not b.changed_since(a))
                warm["status_oids_per_device"] = statistics.mean(
                    len(s.status_oids) for s in specs)
                out = {**warm, "cold": cold}
        finally:
            await client.close()
        return out

    return asyncio.run(go())


# --- discovery ----------------------------------------------------------------------


def _range_targets(network: str, port: int) -> Iterator[Any]:
    import ipaddress

    from fleetroom_agent.snmp.types import Target

    for host in ipaddress.ip_network(network).hosts():
        yield Target(str(host), port)


def task_sweep(task: dict[str, Any]) -> dict[str, Any]:
    """Ours: the discovery sweep over a whole range, default rate and timeout."""
    import ipaddress

    from fleetroom_agent.discovery.sweep import SweepProbe, sweep

    count = ipaddress.ip_network(task["network"]).num_addresses - 2

    async def go() -> list[str]:
        found = []
        async with asyncio.timeout(task["max_seconds"]):
            async for alive in sweep(_range_targets(task["network"], task["port"]),
                                     [SweepProbe("2c", "public")]):
                found.append(alive.target.address)
        return found

    start = _measure_start()
    found = asyncio.run(go())
    result = _measure_end(start, count, "self")
    result.update(addresses=count, alive=len(found), alive_sample=sorted(found)[:20],
                  addresses_per_s=result["devices_per_s"])
    return result


def task_scan_range(task: dict[str, Any]) -> dict[str, Any]:
    """Ours: ``run_scan`` over a whole range (no sweep first), to show why the sweep exists."""
    import ipaddress

    net = ipaddress.ip_network(task["network"])
    count = net.num_addresses - 2
    port = int(task["port"])
    # A CIDR spec always means port 161; elsewhere each address names its port.
    targets = [str(net)] if port == 161 else [f"{h}:{port}" for h in net.hosts()]
    profiles()
    start = _measure_start()
    outcome = asyncio.run(_run_scan(targets, "v2c", task["max_seconds"]))
    result = _measure_end(start, count, "self")
    result.update(_scan_summary(outcome, []))
    result.update(addresses=count, addresses_per_s=result["devices_per_s"])
    return result


def task_identify_range(task: dict[str, Any]) -> dict[str, Any]:
    """Ours without the sweep: what ``run_scan`` did before it swept first (commit
    5f70ff1) -- a full pysnmp identify GET to every address, ``PROBES_IN_FLIGHT`` at
    once, then a read of each responder, ``READS_PER_CORE`` per core at once."""
    import ipaddress
    import os

    from fleetroom_agent.collect.credentials import CredentialMemory, CredentialSet
    from fleetroom_agent.collect.reader import Failed, Reader
    from fleetroom_agent.scan import READS_PER_CORE
    from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient
    from fleetroom_protocol import Reading

    net = ipaddress.ip_network(task["network"])
    count = net.num_addresses - 2
    profiles()
    tally: Counter[str] = Counter()

    async def go() -> None:
        client = PysnmpClient()
        reader = Reader(client, profiles(), [CredentialSet(credential("v2c"))],
                        CredentialMemory(), TIMING)
        in_flight = asyncio.Semaphore(PROBES_IN_FLIGHT)
        reads = asyncio.Semaphore(READS_PER_CORE * (os.cpu_count() or 1))

        async def one(target: Any) -> None:
            try:
                found = await reader.identify(target)
                if isinstance(found, Failed):
                    tally["silent" if found.kind == "timeout" else "failed"] += 1
                    return
                async with reads:
                    result = await reader.read(target, identified=found)
                tally["readings" if isinstance(result, Reading) else "not_read"] += 1
            finally:
                in_flight.release()

        try:
            async with asyncio.timeout(task["max_seconds"]), asyncio.TaskGroup() as tg:
                for target in _range_targets(task["network"], task["port"]):
                    await in_flight.acquire()
                    tg.create_task(one(target))
        finally:
            await client.close()

    start = _measure_start()
    asyncio.run(go())
    result = _measure_end(start, count, "self")
    result.update(addresses=count, addresses_per_s=result["devices_per_s"], **tally)
    return result


def task_cli_sweep(task: dict[str, Any]) -> dict[str, Any]:
    """Reference: ``snmpget -t 1 -r 0`` of sysObjectID per sampled address."""
    port = task["port"]
    addrs = [a if port == 161 else f"{a}:{port}" for a in task["sample"]]
    base = ["snmpget", "-v2c", "-c", "public", "-On", "-Ox", "-m", "", "-t", "1", "-r", "0"]
    jobs = [_commands_job([[*base, a, "1.3.6.1.2.1.1.2.0"]]) for a in addrs]
    parallel = task.get("parallel") or 2 * cores()
    start = _measure_start()
    totals = _cli_pool(jobs, parallel)
    result = _measure_end(start, len(addrs), "children")
    result.update(totals)
    result["answered"] = len(addrs) - totals["failed_devices"]
    result["addresses_per_s"] = result["devices_per_s"]
    full = int(task["extrapolate_to"])
    result["extrapolated"] = {
        "addresses": full,
        "wall_s": result["wall_s"] * full / max(1, len(addrs)),
        "cpu_s": result["cpu_s"] * full / max(1, len(addrs)),
    }
    return result


# --- packets on the wire --------------------------------------------------------------


class _RelayControl:
    """The relay subprocess and its dump command."""

    def __init__(self, children: Children, config_path: Path) -> None:
        self.proc = children.start([sys.executable, "-m", "bench.relay", str(config_path)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._line(20.0) != "ready":
            raise RuntimeError("relay did not start")

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError("relay did not answer")
        return str(self.proc.stdout.readline()).strip()

    def dump(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        time.sleep(0.3)  # late answers (retries) land in this phase, not the next
        self.proc.stdin.write("dump\n")
        self.proc.stdin.flush()
        counts: dict[str, Any] = json.loads(self._line(20.0))
        return counts


def _per_device(counts: dict[str, Any]) -> dict[str, Any]:
    requests = [c["requests"] for c in counts.values()]
    kinds: Counter[str] = Counter()
    for c in counts.values():
        kinds.update(c["by_kind"])
    n = max(1, len(requests))
    return {
        "devices": len(requests),
        "requests_per_device": sum(requests) / n,
        "requests_min": min(requests, default=0),
        "requests_max": max(requests, default=0),
        "answers_per_device": sum(c["answers"] for c in counts.values()) / n,
        "answer_varbinds_per_device": sum(c["answer_varbinds"] for c in counts.values()) / n,
        "request_bytes_per_device": sum(c["request_bytes"] for c in counts.values()) / n,
        "answer_bytes_per_device": sum(c["answer_bytes"] for c in counts.values()) / n,
        "by_kind": dict(kinds),
    }


def task_pdu_count(task: dict[str, Any]) -> dict[str, Any]:
    """Every client through the counting relay, on a subset of devices."""
    from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient

    fronts = _device_spec_list(task)
    config = Path(task["relay_config"])
    children = Children()
    phases: dict[str, Any] = {}
    try:
        relay = _RelayControl(children, config)
        relay.dump()

        def phase(name: str, run: Callable[[], Any]) -> None:
            run()
            phases[name] = _per_device(relay.dump())

        def scan(v: str) -> Callable[[], Any]:
            return lambda: asyncio.run(_run_scan(_targets(fronts), v, task["max_seconds"]))

        def read(v: str) -> Callable[[], Any]:
            return lambda: asyncio.run(_reader_poll(fronts, v, task["max_seconds"]))

        def cli(v: str, kind: str) -> Callable[[], Any]:
            return lambda: _cli_measure(fronts, v, kind, 2 * cores())

        for version in ("v2c", "v3"):
            phase(f"poll-ours-{version}", scan(version))
            phase(f"poll-reader-{version}", read(version))
            phase(f"poll-cli-{version}", cli(version, "poll"))

            async def status_two_passes(v: str = version) -> None:
                client = PysnmpClient()
                try:
                    await _status_pass(client, fronts, v)
                    phases[f"status-ours-{v}-cold"] = _per_device(relay.dump())
                    await _status_pass(client, fronts, v)
                    phases[f"status-ours-{v}-warm"] = _per_device(relay.dump())
                finally:
                    await client.close()

            asyncio.run(_bounded(status_two_passes(), task["max_seconds"]))
            phase(f"status-cli-{version}", cli(version, "status"))
    finally:
        children.stop_all()
    return {"phases": phases}


async def _bounded(aw: Awaitable[Any], seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await aw


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "scan-poll": task_scan_poll,
    "reader-poll": task_reader_poll,
    "cli-poll": task_cli_poll,
    "status": task_status,
    "cli-status": task_cli_status,
    "sweep": task_sweep,
    "scan-range": task_scan_range,
    "identify-range": task_identify_range,
    "cli-sweep": task_cli_sweep,
    "pdu-count": task_pdu_count,
}


def main(argv: list[str] | None = None) -> int:
    """Run the task in ``argv[0]`` and write its result to ``argv[1]``."""
    from .common import interrupts_unwind

    args = argv if argv is not None else sys.argv[1:]
    task = json.loads(Path(args[0]).read_text())
    with interrupts_unwind():
        result = TASKS[task["task"]](task)
    result.update(_process_figures())
    dump_json(Path(args[1]), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

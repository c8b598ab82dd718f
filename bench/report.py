"""Render the results dict of :mod:`bench.run` as Markdown."""

from __future__ import annotations

from typing import Any

GOAL_V2C = 2.0
GOAL_V3 = 1.0
GOAL_RSS_MB = 150.0


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(ours: dict[str, Any] | None, cli: dict[str, Any] | None) -> float | None:
    if not ours or not cli or not cli.get("devices_per_cpu_s"):
        return None
    return float(ours["devices_per_cpu_s"]) / float(cli["devices_per_cpu_s"])


def _verdict(value: float | None, goal: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    ok = value >= goal if higher_is_better else value <= goal
    return "**met**" if ok else "**MISSED**"


def _pdu(results: dict[str, Any], phase: str, key: str = "requests_per_device") -> str:
    phases = results.get("pdu", {}).get("phases", {})
    got = phases.get(phase)
    return _f(got.get(key), 2) if got else "–"


def machine_section(results: dict[str, Any]) -> list[str]:
    """The machine and the configuration."""
    m, c = results["machine"], results["config"]
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())
    switch = ("demo-switch-cisco included" if c["switch_included"] else
              "non-printer demo-switch-cisco left out: every device is a printer")
    return [
        f"# Fleetroom agent benchmark — {results.get('started', '')}",
        "",
        f"* machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_mb']:,} MiB, "
        f"Linux {m['kernel']}",
        f"* Python {m['python']}; net-snmp {m['net_snmp']}; {libs}",
        f"* code measured: git {m.get('git_commit', '?')}"
        + (f" plus uncommitted changes to {', '.join(m['git_dirty'])}"
           if m.get("git_dirty") else " (clean agent/packages/fleetsim)"),
        f"* fleet: {c['devices']:,} simulated devices (net-snmp snmpd on "
        f"{c['fleet_first']} … {c['fleet_last']} port {m['snmp_port']}), "
        f"{len(c['recordings'])} SYNTHETIC demo recordings cycled "
        f"({switch}); "
        f"{c['snmpd_processes']} snmpd processes",
        f"* agent defaults: timeout {c['timing']['timeout']} s, retries "
        f"{c['timing']['retries']}, max-repetitions {c['timing']['max_repetitions']}, "
        f"{c['reads_in_flight']} reads in flight; reference: {c['cli_parallel']} "
        f"net-snmp commands at once (2 × cores), `-On -Ox -m '' -t "
        f"{c['timing']['timeout']:g} -r {c['timing']['retries']}`, "
        f"`snmpbulkwalk -Cr{c['timing']['max_repetitions']}`",
        "* CPU: ours = getrusage(SELF) of the agent's process during the measurement; "
        "reference = getrusage(CHILDREN) of the net-snmp processes. snmpd's own CPU is "
        "in neither (shown separately). Peak RSS = VmHWM of the whole agent process "
        "(Python, pysnmp, profiles and all).",
        "",
    ]


def _complete(r: dict[str, Any] | None, n: int) -> bool:
    """Every device read, no errors, no timeouts."""
    if not r or "error" in r:
        return False
    return (r.get("readings", n - r.get("failed_devices", 0)) == n
            and not r.get("errors") and not r.get("timeouts"))


def _ours_row(label: str, side: str, r: dict[str, Any], n: int, pdus: str) -> str:
    if "error" in r:
        return f"| {label} | {side} | failed: {r['error']} | | | | | | | |"
    read = r["readings"]
    got = f"{read:,}" if read == n else f"**{read:,} of {n:,}**"
    return (f"| {label} | {side} | {_f(r['devices_per_s'])} | "
            f"{_f(r['cpu_ms_per_device'])} | {_f(r['devices_per_cpu_s'])} | "
            f"{_f(r['peak_rss_mb'])} | {got} / {r['errors']} / {r['timeouts']} | "
            f"{pdus} | {r.get('udp_rcvbuf_errors', '–')} | {_f(r.get('snmpd_cpu_s'))} |")


def poll_section(results: dict[str, Any]) -> list[str]:
    """Table 1: full poll."""
    poll = results.get("poll", {})
    if not poll:
        return []
    n = results["config"]["devices"]
    lines = [
        f"## 1. Full poll of {n:,} devices",
        "",
        "* **ours, run_scan** = `run_scan` over the fleet's address ranges, everything "
        "included: its sweep probe, the identify GET, then the profile's GET and its "
        "subtrees in one GETBULK stream (`walk_many`) (v3: plus one engine discovery per "
        "device);",
        "* **ours, Reader** = `Reader.read` per known endpoint (identify GET, then the "
        "profile's GET and its `walk_many` stream), 16 per core at once as `run_scan` "
        "reads: the polling path for devices already found;",
        "* **reference** = per device one `snmpget` of the same scalars (first-GET OIDs + "
        "`plan().scalars`) and one `snmpbulkwalk` per `plan().walks` root.",
        "",
        "CPU ms/device and devices per CPU-second divide by all devices of the fleet. "
        "*UDP drops* = the kernel's RcvbufErrors during the run (datagrams thrown away "
        "because a socket's receive buffer was full; system-wide counter).",
        "",
        "| SNMP | side | devices/s (wall) | CPU ms/device | devices per CPU-s | "
        "peak RSS MiB | read / errors / timeouts | PDUs/device (wire) | UDP drops | "
        "snmpd CPU s (not counted) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for version, label in (("v2c", "v2c"), ("v3", "v3 authPriv SHA-256/AES-256")):
        got = poll.get(version, {})
        for key, side in (("ours", "ours, run_scan"), ("reader", "ours, Reader")):
            if got.get(key):
                phase = "poll-ours" if key == "ours" else "poll-reader"
                lines.append(_ours_row(label, side, got[key], n,
                                       _pdu(results, f"{phase}-{version}")))
        cli = got.get("cli")
        if cli and "error" not in cli:
            lines.append(
                f"| {label} | net-snmp CLI | {_f(cli['devices_per_s'])} | "
                f"{_f(cli['cpu_ms_per_device'])} | {_f(cli['devices_per_cpu_s'])} | – | "
                f"{n - cli['failed_devices']:,} / {cli['errors']} / {cli['timeouts']} | "
                f"{_pdu(results, f'poll-cli-{version}')} | "
                f"{cli.get('udp_rcvbuf_errors', '–')} | {_f(cli.get('snmpd_cpu_s'))} |")
        elif cli:
            lines.append(f"| {label} | net-snmp CLI | failed: {cli['error']} | | | | | | | |")
    lines += ["", "| goal | ours | measured | verdict |", "|---|---|---:|---|"]
    for version, goal in (("v2c", GOAL_V2C), ("v3", GOAL_V3)):
        got = poll.get(version, {})
        cli = got.get("cli")
        for key, side in (("ours", "run_scan"), ("reader", "Reader")):
            ours = got.get(key)
            if not ours:
                continue
            ratio = _ratio(ours, cli)
            if not _complete(ours, n) or not _complete(cli, n):
                verdict = "**INVALID**: not every device was read (see above)"
            else:
                verdict = _verdict(ratio, goal)
            what = "v2c" if version == "v2c" else "v3 authPriv"
            lines.append(f"| {what}: ≥ {goal:g}× the CLI in devices per CPU-second | {side} | "
                         f"{_f(ratio, 2)}× | {verdict} |")
    for key, side in (("ours", "run_scan"), ("reader", "Reader")):
        rss = max(((poll.get(v, {}).get(key) or {}).get("peak_rss_mb", 0.0)
                   for v in ("v2c", "v3")), default=0.0)
        if rss:
            lines.append(f"| peak RSS ≤ {GOAL_RSS_MB:g} MiB at {n:,} devices | {side} | "
                         f"{_f(rss)} MiB | "
                         f"{_verdict(rss, GOAL_RSS_MB, higher_is_better=False)} |")
    lines.append("")
    return lines


def status_section(results: dict[str, Any]) -> list[str]:
    """Table 2: status cycle."""
    status = results.get("status", {})
    if not status:
        return []
    n = results["config"]["devices"]
    lines = [
        f"## 2. Status cycle, {n:,} devices",
        "",
        "ours = one `status_check` per device, all at once (the client's own in-flight "
        "bound), on a warm client (a first, cold pass did v3 engine discovery); "
        "reference = one `snmpget` of `status_oids(profile)` per device. PDUs counted "
        "on the wire by a UDP relay on a subset of devices.",
        "",
        "| SNMP | side | devices/s (wall) | CPU ms/device | devices per CPU-s | "
        "errors / timeouts | requests/device (wire) | cold pass: devices/s, CPU ms/device, "
        "requests/device |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for version in ("v2c", "v3"):
        got = status.get(version, {})
        ours, cli = got.get("ours"), got.get("cli")
        if ours and "error" not in ours:
            cold = ours.get("cold", {})
            lines.append(
                f"| {version} | ours | {_f(ours['devices_per_s'])} | "
                f"{_f(ours['cpu_ms_per_device'], 2)} | {_f(ours['devices_per_cpu_s'])} | "
                f"{ours['errors']} / {ours['timeouts']} | "
                f"{_pdu(results, f'status-ours-{version}-warm')} | "
                f"{_f(cold.get('devices_per_s'))}, {_f(cold.get('cpu_ms_per_device'), 2)}, "
                f"{_pdu(results, f'status-ours-{version}-cold')} |")
        elif ours:
            lines.append(f"| {version} | ours | failed: {ours['error']} | | | | | |")
        if cli and "error" not in cli:
            lines.append(
                f"| {version} | net-snmp `snmpget` | {_f(cli['devices_per_s'])} | "
                f"{_f(cli['cpu_ms_per_device'], 2)} | {_f(cli['devices_per_cpu_s'])} | "
                f"{cli['errors']} / {cli['timeouts']} | "
                f"{_pdu(results, f'status-cli-{version}')} | – |")
        elif cli:
            lines.append(f"| {version} | net-snmp | failed: {cli['error']} | | | | | |")
    lines.append("")
    return lines


def pdu_section(results: dict[str, Any]) -> list[str]:
    """The relay's packet counts per phase."""
    phases = results.get("pdu", {}).get("phases", {})
    if not phases:
        return []
    lines = [
        f"### Packets on the wire ({results['pdu'].get('devices', '?')} devices through "
        "the counting relay)",
        "",
        "| phase | requests/device (min–max) | answers/device | var-binds answered/device "
        "(v1/v2c only) | bytes out / in per device | request kinds |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, p in phases.items():
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(p["by_kind"].items()))
        lines.append(
            f"| {name} | {_f(p['requests_per_device'], 2)} ({p['requests_min']}–"
            f"{p['requests_max']}) | {_f(p['answers_per_device'], 2)} | "
            f"{_f(p['answer_varbinds_per_device'])} | "
            f"{_f(p['request_bytes_per_device'], 0)} / {_f(p['answer_bytes_per_device'], 0)} |"
            f" {kinds} |")
    lines.append("")
    return lines


def discovery_section(results: dict[str, Any]) -> list[str]:
    """Table 3: sweep vs. full scan vs. snmpget per address."""
    disc = results.get("discovery", {})
    if not disc:
        return []
    c = results["config"]
    lines = [
        f"## 3. Discovery: {c['sweep_network']} where almost nothing answers",
        "",
        f"{len(disc.get('answering', []))} snmpd endpoints answer inside the range "
        f"({', '.join(disc.get('answering', [])[:4])} …). *no listener*: nothing bound, "
        "so each probe draws an instant ICMP port-unreachable from the loopback "
        "interface. *silent*: a socket bound on every other address that never answers "
        "(what a real network with empty addresses looks like; see bench/silent.py). "
        "Neither the agent nor snmpget reads ICMP errors on its unconnected UDP "
        "sockets, so both wait out their timeout either way; the difference is kernel "
        "work only.",
        "",
        "| what | addresses | found | wall s | addresses/s | CPU s | CPU ms per 1,000 "
        "addresses | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = (
        ("sweep", f"ours: `sweep()` {c['sweep_network']} (defaults: 5,000 packets/s, "
                  "timeout 1 s, no retry)"),
        ("scan_all", f"ours: `run_scan` {c['sweep_network']} (sweep with 2 s × 2 tries, "
                     "then read the responders)"),
        ("scan", f"ours: `run_scan` {c['scan_network']}"),
        ("identify", f"ours WITHOUT a sweep: {c['scan_network']}, pysnmp identify GET per "
                     "address (512 allowed at once, but PysnmpClient lets 64 in flight; "
                     "2 s × 2 tries), then read"),
        ("cli", f"net-snmp: `snmpget -t 1 -r 0` per address, sample of {c['cli_sample']}, "
                f"{c['cli_parallel']} at once"))
    for mode, mode_label in (("icmp", "no listener"), ("silent", "silent")):
        got = disc.get(mode, {})
        for key, label in labels:
            r = got.get(key)
            if not r:
                continue
            if "error" in r:
                lines.append(f"| {label}, {mode_label} | failed: {r['error']} | | | | | | |")
                continue
            if key in ("scan", "scan_all", "identify"):
                others = r.get("skipped", 0) + r.get("not_read", 0)
                found = f"{r.get('readings', 0)} read, {others} not printers"
            else:
                found = str(r.get("alive", r.get("answered", 0)))
            rss = _f(r.get("peak_rss_mb")) if key != "cli" else "–"
            count = r.get("addresses", r["devices"])
            lines.append(
                f"| {label}, {mode_label} | {count:,} | {found} | {_f(r['wall_s'])} | "
                f"{_f(r['addresses_per_s'])} | "
                f"{_f(r['cpu_s'], 2)} | {_f(r['cpu_s'] / max(1, r['devices']) * 1e6, 0)} | "
                f"{rss} |")
            if key == "cli" and "extrapolated" in r:
                x = r["extrapolated"]
                lines.append(
                    f"| ↳ EXTRAPOLATED to {x['addresses']:,} addresses (×"
                    f"{x['addresses'] / max(1, r['devices']):,.0f}, not measured) | "
                    f"{x['addresses']:,} | – | {_f(x['wall_s'])} | "
                    f"{_f(x['addresses'] / x['wall_s'] if x['wall_s'] else None)} | "
                    f"{_f(x['cpu_s'], 1)} | – | – |")
    lines.append("")
    return lines


def noise_section(results: dict[str, Any]) -> list[str]:
    """How much CPU other programs took while each worker ran."""
    rows = []

    def visit(path: str, node: Any) -> None:
        if isinstance(node, dict):
            if "other_cpu_s" in node:
                wall = node.get("worker_wall_s") or node.get("process_wall_s") or 1.0
                rows.append((path, wall, node["other_cpu_s"], node["other_cpu_s"] / wall,
                             node.get("interrupt_cpu_s"), node.get("steal_cpu_s"),
                             node.get("loadavg", [0, 0])))
            for key, value in node.items():
                if key not in ("cold", "extrapolated", "phases"):
                    visit(f"{path}/{key}" if path else key, value)

    for section in ("poll", "status", "pdu", "discovery"):
        visit(section, results.get(section, {}))
    if not rows:
        return []
    worst = max(r[3] for r in rows)
    lines = [
        "## Noise: what else ran during each measurement",
        "",
        f"The machine has {results['machine']['nproc']} CPUs. CPU-time figures above "
        "count only the measured processes; wall-clock rates (devices/s) drop when other "
        "programs compete"
        + (" — **this run was disturbed: compare CPU figures, not devices/s**."
           if worst > 0.25 else "."),
        "*Other programs* = CPU charged to processes machine-wide, minus the worker "
        "(and its children) and snmpd, over the worker's whole life. *Interrupts* = "
        "irq + softirq time, mostly the kernel carrying our own loopback packets (and "
        "answering with ICMP where nothing listens); charged to nobody.",
        "",
        "| worker | wall s | other programs' CPU s | CPUs busy elsewhere | "
        "interrupts CPU s | steal s | load avg before → after |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [f"| {p} | {_f(w)} | {_f(o)} | {_f(sh, 2)} | {_f(irq)} | {_f(st)} | "
              f"{_f(la[0], 2)} → {_f(la[1], 2)} |"
              for p, w, o, sh, irq, st, la in rows]
    lines.append("")
    return lines


def errors_section(results: dict[str, Any]) -> list[str]:
    """Workers that failed."""
    errs = results.get("failures", [])
    if not errs:
        return []
    return ["## Failures", "", *[f"* {e}" for e in errs], ""]


def render(results: dict[str, Any]) -> str:
    """The whole report."""
    parts = [*machine_section(results), *poll_section(results), *status_section(results),
             *pdu_section(results), *discovery_section(results), *noise_section(results),
             *errors_section(results)]
    parts.append(f"Raw figures: `{results.get('json_path', 'results-*.json')}`; total "
                 f"bench time {results.get('duration_s', 0):.0f} s.")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RESULTS.json``: render a saved run again."""
    import json
    import sys
    from pathlib import Path

    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    sys.stdout.write(render(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

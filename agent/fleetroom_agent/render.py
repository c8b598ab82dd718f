"""Human output for scan and probe (rich); JSON output lives in the commands."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from fleetroom_protocol import Reading
from rich.console import Console
from rich.table import Table

from .collect.reader import Failed, Skipped


def _state(reading: Reading) -> str:
    crit = [a for a in reading.alerts if a.severity == "critical"]
    warn = [a for a in reading.alerts if a.severity.startswith("warning")]
    if crit:
        return f"[red]error[/] ({', '.join(sorted({a.code for a in crit}))})"
    if warn:
        return f"[yellow]warning[/] ({', '.join(sorted({a.code for a in warn}))})"
    return "[green]ok[/]"


def _supplies_short(reading: Reading) -> str:
    parts = []
    for s in reading.supplies:
        if s.type not in ("toner", "ink", "inkCartridge", "tonerCartridge", "solidWax"):
            continue
        label = s.colour or s.description or s.type
        level = f"{s.level_percent:g}%" if s.level_percent is not None else s.state.value
        parts.append(f"{label} {level}")
    return ", ".join(parts[:6])


def _address_key(r: Reading) -> tuple[int, int, str]:
    try:
        ip = ipaddress.ip_address(r.identity.ip or "")
    except ValueError:
        return (9, 0, r.target)
    return (ip.version, int(ip), r.target)


def scan_table(readings: Sequence[Reading]) -> Table:
    """One row per printer: address, identity, total counter, supplies, state."""
    t = Table(title=f"{len(readings)} printer(s)", show_lines=False)
    for col in ("Address", "Vendor", "Model", "Serial", "Total", "Supplies", "State"):
        t.add_column(col, overflow="fold")
    for r in sorted(readings, key=_address_key):
        total = r.counter("total")
        t.add_row(r.target, r.identity.vendor or "-", r.identity.model or "-",
                  r.identity.serial or "-", f"{total:,}" if total is not None else "-",
                  _supplies_short(r) or "-", _state(r))
    return t


def print_probe(console: Console, r: Reading) -> None:
    """Everything about one device, grouped the way a technician reads it."""
    ident = r.identity
    console.rule(f"[bold]{ident.vendor or '?'} {ident.model or ''}[/] at {r.target}")
    if r.profile:
        console.print(f"Profile: [bold]{r.profile.name}[/] (chain {' → '.join(r.profile.chain)})")
        console.print(f"  why: {r.profile.reason}")
    console.print(f"SNMP v{r.snmp_version} with credential set '{r.credential}', "
                  f"{r.duration_ms} ms")
    it = Table(show_header=False, box=None)
    for key in ("vendor", "manufacturer", "model", "serial", "firmware", "mac", "ip",
                "hostname", "sys_name", "sys_location", "sys_contact", "sys_object_id",
                "uptime_s", "device_kind"):
        value = getattr(ident, key)
        it.add_row(key, "-" if value is None else str(value))
    console.print(it)
    caps = r.capabilities
    console.print(f"Colour: {caps.colour}  Duplex: {caps.duplex}  "
                  f"Technology: {caps.marker_technology}")
    if r.counters:
        ct = Table(title="Counters")
        for col in ("Name", "Value", "Unit", "Source"):
            ct.add_column(col, overflow="fold")
        for c in r.counters:
            ct.add_row(c.name, f"{c.value:,}", c.unit, c.source)
        console.print(ct)
    if r.raw_counters:
        console.print(f"{len(r.raw_counters)} raw vendor counter(s) kept (see --json)")
    if r.supplies:
        st = Table(title="Supplies")
        for col in ("#", "Type", "Colour", "Description", "Level", "State", "Raw"):
            st.add_column(col, overflow="fold")
        for s in r.supplies:
            free = " free" if s.class_ == "receptacle" else ""
            st.add_row(str(s.index), s.type, s.colour or "-", s.description or "-",
                       f"{s.level_percent:g}%{free}" if s.level_percent is not None else "-",
                       s.state.value, f"{s.raw_level}/{s.raw_max}")
        console.print(st)
    if caps.trays:
        tt = Table(title="Trays")
        for col in ("#", "Name", "Media", "Level", "State"):
            tt.add_column(col)
        for tray in caps.trays:
            tt.add_row(str(tray.index), tray.name or "-", tray.media or "-",
                       f"{tray.raw_level}/{tray.raw_capacity}", tray.state.value)
        console.print(tt)
    console.print(f"Status: device {r.status.device_status}, printer {r.status.printer_status}"
                  + (f", panel: {' | '.join(r.status.console_text)}"
                     if r.status.console_text else ""))
    if r.alerts:
        at = Table(title="Alerts")
        for col in ("Severity", "Code", "Group", "Source", "Description"):
            at.add_column(col, overflow="fold")
        for a in r.alerts:
            at.add_row(a.severity, a.code, a.group or "-", a.source, a.description or "-")
        console.print(at)
    if r.missing:
        console.print("Missing: " + ", ".join(f"{m.field} ({m.reason})" for m in r.missing))
    for e in r.errors:
        console.print(f"[yellow]note:[/] {e}")


def print_skipped(console: Console, results: Sequence[Skipped | Failed]) -> None:
    """Verbose mode: every address that answered but was not read, and why."""
    for res in results:
        tag = "skipped" if isinstance(res, Skipped) else "failed"
        console.print(f"[dim]{res.target}: {tag}: {res.reason}[/]")

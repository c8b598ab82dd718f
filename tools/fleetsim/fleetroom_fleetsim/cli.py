"""``fleetroom-fleetsim``: run simulated printers on loopback for a demo or a manual test.

Kept to one job: ``serve`` starts snmpsim over recording directories and prints what
a user needs to point the agent (or ``snmpwalk``) at it, then runs until Ctrl-C.
Load-test fleets (:mod:`fleetroom_fleetsim.snmpd_fleet`) are driven from Python.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .snmpsim_runner import SnmpSimulator
from .synthetic import DATA_DIR

DEFAULT_BIND = "127.0.0.1:1161"


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) on loopback only; port 0 = any free port.

    The simulator answers any community it has a file for, so it must never be
    reachable from the network.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IP address: {host!r}") from exc
    if not addr.is_loopback:
        raise argparse.ArgumentTypeError(f"{host} is not a loopback address")
    port = int(port_text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"port {port} out of range")
    return host, port


def communities(directory: Path) -> list[tuple[str, Path]]:
    """(community, file) per recording, as snmpsim names them: the path below
    ``directory`` without ``.snmprec``."""
    out = []
    for path in sorted(directory.rglob("*.snmprec")):
        out.append((path.relative_to(directory).with_suffix("").as_posix(), path))
    return out


def _stage_demo(dest: Path) -> Path:
    """Copy the synthetic ``demo-*`` recordings into ``dest`` (the other synthetic
    files are test fixtures: same device twice, a jammed printer…)."""
    dest.mkdir()
    for path in sorted(DATA_DIR.glob("demo-*.snmprec")):
        shutil.copy2(path, dest / path.name)
    return dest


def serve(dirs: Sequence[Path], host: str, port: int,
          shown_as: dict[Path, Path] | None = None) -> int:
    """Run snmpsim over ``dirs`` until interrupted; 1 if it dies on its own.

    ``shown_as`` maps a staged directory to the one its files came from, so the
    listing names files a user can open.
    """
    shown_as = shown_as or {}
    with SnmpSimulator(list(dirs), host=host, port=port) as sim:
        listed = [(c, shown_as.get(d, d) / p.relative_to(d))
                  for d in dirs for c, p in communities(d)]
        print(f"snmpsim serving {len(listed)} devices at {sim.endpoint} "
              "(SNMPv1/v2c community = SNMPv3 context = name below)")
        for community, path in listed:
            print(f"  {community:<32} {path}")
        if listed:
            print(f"try: snmpwalk -v2c -c {listed[0][0]} {sim.endpoint} 1.3.6.1.2.1.43.11")
        print("Ctrl-C to stop.", flush=True)
        try:
            while sim.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("stopping", flush=True)
            return 0
        print("snmpsim exited unexpectedly", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleetroom-fleetsim`` console script."""
    parser = argparse.ArgumentParser(prog="fleetroom-fleetsim", description=__doc__.splitlines()[0]
                                     if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve .snmprec recordings with snmpsim until Ctrl-C")
    p_serve.add_argument("--dir", type=Path, action="append", default=[],
                         help="directory of .snmprec files (repeatable; read only)")
    p_serve.add_argument("--bind", type=parse_bind, default=parse_bind(DEFAULT_BIND),
                         metavar="HOST:PORT", help=f"loopback address (default {DEFAULT_BIND})")
    p_serve.add_argument("--synthetic-demo", action="store_true",
                         help="also serve the synthetic demo fleet shipped with fleetsim")
    args = parser.parse_args(argv)

    dirs: list[Path] = list(args.dir)
    for d in dirs:
        if not d.is_dir():
            parser.error(f"--dir {d}: not a directory")
    with tempfile.TemporaryDirectory(prefix="fleetsim-demo-") as tmp:
        shown_as: dict[Path, Path] = {}
        if args.synthetic_demo:
            staged = _stage_demo(Path(tmp) / "synthetic-demo")
            dirs.append(staged)
            shown_as[staged] = DATA_DIR
        if not dirs:
            parser.error("nothing to serve: give --dir DIR and/or --synthetic-demo")
        host, port = args.bind
        return serve(dirs, host, port, shown_as)


if __name__ == "__main__":
    raise SystemExit(main())

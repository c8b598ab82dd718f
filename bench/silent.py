"""Silent hosts for the sweep: a UDP socket on every address of a loopback range that
never answers.

Without a listener, a datagram to 127.x.y.z makes the kernel answer with ICMP
port-unreachable at once; a real network mostly has nobody there, or a firewall that
drops.  A single wildcard socket (``0.0.0.0:161``) cannot stand in for that: it would
also swallow port 161 on every other loopback address and every interface of the
host (other tests rely on those being closed, and it is not ours to listen on).  So
this binds one socket per address of the range (``127.21.0.1:161`` …) with a tiny
receive buffer and never reads from it: packets are queued, then dropped, and no
ICMP is sent.  A process may only hold ``RLIMIT_NOFILE`` descriptors (20,000 on the
reference machine, not raisable without privileges), so the range is split over
several processes, each bound with ``python -m bench.silent CONFIG.json SHARD``.

Prints ``ready <bound> <skipped>`` once bound, then waits for ``quit`` or end of
stdin (or ``max_seconds``) and exits.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import resource
import select
import socket
import sys
import time
from pathlib import Path

RCVBUF = 1024
"""Bytes of receive buffer per socket (the kernel rounds up to its minimum)."""
FD_HEADROOM = 64


def per_process() -> int:
    """How many sockets one process may hold (its hard descriptor limit, less headroom)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 65536
    return max(256, min(limit, 65536) - FD_HEADROOM)


def shard_hosts(network: str, exclude: set[str], shard: int, shards: int) -> list[str]:
    """The hosts of ``network`` (network and broadcast addresses left out) minus
    ``exclude``, split into ``shards`` contiguous parts; part ``shard``."""
    hosts = [str(h) for h in ipaddress.ip_network(network).hosts() if str(h) not in exclude]
    size = -(-len(hosts) // shards)
    return hosts[shard * size:(shard + 1) * size]


def main(argv: list[str] | None = None) -> int:
    """Bind this shard's sockets and wait."""
    args = argv if argv is not None else sys.argv[1:]
    config = json.loads(Path(args[0]).read_text())
    shard = int(args[1])
    hosts = shard_hosts(config["network"], set(config.get("exclude", ())), shard,
                        int(config["shards"]))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = int(config["port"])
    socks: list[socket.socket] = []
    skipped = 0
    for host in hosts[:per_process()]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        try:
            s.bind((host, port))
        except OSError:  # taken (an snmpd endpoint, someone else's test): leave it
            s.close()
            skipped += 1
            continue
        socks.append(s)
    skipped += max(0, len(hosts) - per_process())
    print(f"ready {len(socks)} {skipped}", flush=True)
    deadline = time.monotonic() + float(config.get("max_seconds", 3600))
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], 1.0)
            if ready:
                line = sys.stdin.readline()
                if not line or line.strip() == "quit":
                    break
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

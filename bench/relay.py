"""A UDP relay that counts SNMP packets per device: the on-the-wire proof of PDU counts.

``python -m bench.relay CONFIG.json`` binds one *front* socket per device (e.g.
127.0.30.x:161) and forwards every datagram to that device's real endpoint, and
each answer back to whoever asked.  It counts requests and answers per front,
classifies requests (v1/v2c PDU type; v3 discovery vs. authenticated) and counts
the var-binds in v1/v2c answers, with a few lines of BER parsing that share no
code with the agent or net-snmp.  It runs in its own process, so its CPU is in
no measurement (and no timed measurement goes through it).

Control on stdin, one command per line: ``dump`` prints the counts gathered since
the last dump as one JSON line (and resets them); ``quit`` or end of input stops
it.  It also stops by itself after ``max_seconds``.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_UPSTREAM = 4096
"""Upstream sockets kept open (one per front and client address), oldest closed first."""
PDU_NAMES = {0xA0: "get", 0xA1: "getnext", 0xA2: "response", 0xA3: "set", 0xA5: "getbulk",
             0xA8: "report"}


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the BER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def classify(data: bytes) -> tuple[str, int | None]:
    """(kind, var-bind count or None) of one SNMP message, ``("unparsable", None)``
    when it is not one."""
    try:
        _, pos, _ = _tlv(data, 0)  # Message SEQUENCE
        _, vpos, vend = _tlv(data, pos)  # version INTEGER
        version = int.from_bytes(data[vpos:vend], "big")
        if version in (0, 1):
            _, _, cend = _tlv(data, vend)  # community
            tag, ppos, _ = _tlv(data, cend)  # PDU
            for _ in range(3):  # request-id, error-status, error-index / non-rep, max-rep
                _, _, ppos = _tlv(data, ppos)
            _, lpos, lend = _tlv(data, ppos)  # var-bind list
            count = 0
            while lpos < lend:
                _, _, lpos = _tlv(data, lpos)
                count += 1
            name = PDU_NAMES.get(tag, hex(tag))
            return f"v{'1' if version == 0 else '2c'}-{name}", count
        if version == 3:
            _, gpos, _ = _tlv(data, vend)  # msgGlobalData
            _, _, gpos = _tlv(data, gpos)  # msgID
            _, _, gpos = _tlv(data, gpos)  # msgMaxSize
            _, fpos, _ = _tlv(data, gpos)  # msgFlags
            flags = data[fpos]
            level = {0: "noAuthNoPriv", 1: "authNoPriv", 3: "authPriv"}.get(flags & 3, "bad")
            return f"v3-{level}", None
    except (IndexError, ValueError):
        pass
    return "unparsable", None


@dataclass
class FrontStats:
    """What went through one front socket since the last dump."""

    requests: Counter[str] = field(default_factory=Counter)
    answers: int = 0
    answer_varbinds: int = 0
    request_bytes: int = 0
    answer_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {"requests": sum(self.requests.values()), "by_kind": dict(self.requests),
                "answers": self.answers, "answer_varbinds": self.answer_varbinds,
                "request_bytes": self.request_bytes, "answer_bytes": self.answer_bytes}


class Relay:
    """Fronts, upstream sockets and counters (single-threaded, ``selectors``)."""

    def __init__(self, pairs: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
        self.sel = selectors.DefaultSelector()
        self.fronts: dict[int, tuple[socket.socket, tuple[str, int], str]] = {}
        self.stats: dict[str, FrontStats] = {}
        self.upstream: OrderedDict[tuple[int, tuple[str, int]], socket.socket] = OrderedDict()
        self.back_of: dict[int, tuple[socket.socket, tuple[str, int], str, socket.socket]] = {}
        for front, back in pairs:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(front)
            s.setblocking(False)
            name = f"{front[0]}:{front[1]}"
            self.fronts[s.fileno()] = (s, back, name)
            self.stats[name] = FrontStats()
            self.sel.register(s, selectors.EVENT_READ, "front")

    def _upstream(self, front: socket.socket, back: tuple[str, int], name: str,
                  client: tuple[str, int]) -> socket.socket:
        key = (front.fileno(), client)
        up = self.upstream.get(key)
        if up is not None:
            self.upstream.move_to_end(key)
            return up
        if len(self.upstream) >= MAX_UPSTREAM:
            _, old = self.upstream.popitem(last=False)
            self.sel.unregister(old)
            self.back_of.pop(old.fileno(), None)
            old.close()
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.connect(back)
        up.setblocking(False)
        self.upstream[key] = up
        self.back_of[up.fileno()] = (front, client, name, up)
        self.sel.register(up, selectors.EVENT_READ, "up")
        return up

    def on_front(self, fd: int) -> None:
        """A request from a client: count it and pass it on."""
        front, back, name = self.fronts[fd]
        for _ in range(64):  # drain a burst, bounded
            try:
                data, client = front.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            kind, _ = classify(data)
            st = self.stats[name]
            st.requests[kind] += 1
            st.request_bytes += len(data)
            try:
                self._upstream(front, back, name, client).send(data)
            except OSError:
                st.requests["relay-send-failed"] += 1

    def on_upstream(self, fd: int) -> None:
        """An answer from a device: count it and hand it back to the client."""
        entry = self.back_of.get(fd)
        if entry is None:
            return
        front, client, name, up = entry
        for _ in range(64):
            try:
                data = up.recv(65535)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                return
            _, varbinds = classify(data)
            st = self.stats[name]
            st.answers += 1
            st.answer_bytes += len(data)
            st.answer_varbinds += varbinds or 0
            front.sendto(data, client)

    def dump(self) -> dict[str, Any]:
        """Counts since the last dump, per front; resets them."""
        out = {name: st.to_json() for name, st in self.stats.items()}
        self.stats = {name: FrontStats() for name in self.stats}
        return out


def main(argv: list[str] | None = None) -> int:
    """Run the relay described by the JSON file ``argv[0]``."""
    args = argv if argv is not None else sys.argv[1:]
    config = json.loads(Path(args[0]).read_text())
    pairs = [((p["front"][0], int(p["front"][1])), (p["back"][0], int(p["back"][1])))
             for p in config["pairs"]]
    relay = Relay(pairs)
    stdin_fd = sys.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    relay.sel.register(stdin_fd, selectors.EVENT_READ, "ctl")
    print("ready", flush=True)
    deadline = time.monotonic() + float(config.get("max_seconds", 3600))
    pending = b""
    while time.monotonic() < deadline:
        for key, _ in relay.sel.select(timeout=0.5):
            if key.data == "front":
                relay.on_front(key.fd)
            elif key.data == "up":
                relay.on_upstream(key.fd)
            else:
                chunk = os.read(stdin_fd, 4096)
                if not chunk:
                    return 0
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    cmd = line.decode().strip()
                    if cmd == "quit":
                        return 0
                    if cmd == "dump":
                        print(json.dumps(relay.dump()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

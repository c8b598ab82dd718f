"""Helpers for the fleetsim tests, handed out as fixtures (importlib import mode).

Expected values are read from the recordings by :class:`Recording`, a parser that
is deliberately separate from the code under test, and compared with what the
net-snmp command-line tools (an SNMP implementation that is neither snmpsim nor
our agent) print.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "fleetroom_fleetsim" / "data" / "synthetic"
_TYPES = {"2": "INTEGER", "4": "OCTETS", "6": "OID", "65": "Counter32", "66": "Gauge32",
          "67": "Timeticks"}


@dataclass
class Recording:
    """{oid: (tag, raw)} of one file, and the (type, value) net-snmp should print."""

    path: Path
    rows: dict[str, tuple[str, str]]

    @classmethod
    def load(cls, path: Path) -> Recording:
        rows = {}
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.count("|") >= 2:
                oid, tag, raw = line.split("|", 2)
                rows[oid.lstrip(".")] = (tag, raw)
        return cls(path, rows)

    def expected(self, oid: str) -> tuple[str, object]:
        """What a static agent answers: variation modules give their ``initial``."""
        tag, raw = self.rows[oid]
        base, _, module = tag.partition(":")
        if module == "numeric":
            raw = dict(p.split("=", 1) for p in raw.split(","))["initial"]
        kind = _TYPES[base.rstrip("x")]
        if kind == "OCTETS":
            return kind, bytes.fromhex(raw) if base.endswith("x") else raw.encode("latin-1")
        if kind == "OID":
            return kind, "." + raw.lstrip(".")
        return kind, int(raw)

    def is_numeric(self, oid: str) -> bool:
        return self.rows[oid][0].endswith(":numeric")


def parse_netsnmp(text: str) -> dict[str, tuple[str, object]]:
    """``-On -Ox -OU`` output of snmpget/snmpbulkwalk as {oid: (type, value)}.

    Hex-STRING values continue on the following lines; end-of-view and
    no-such-object lines become ("EXCEPTION", message).
    """
    out: dict[str, tuple[str, object]] = {}
    entries: list[str] = []
    for line in text.splitlines():
        if line.startswith("."):
            entries.append(line)
        elif entries and line.strip():
            entries[-1] += " " + line.strip()
    for entry in entries:
        oid, _, value = entry.partition(" = ")
        oid = oid.lstrip(".")
        if value.startswith(("No Such", "No more variables")):
            out.setdefault(oid, ("EXCEPTION", value))
            continue
        if value == '""':
            out[oid] = ("OCTETS", b"")
            continue
        kind, _, v = value.partition(": ")
        if kind == "Hex-STRING":
            out[oid] = ("OCTETS", bytes.fromhex(v.replace(" ", "")))
        elif kind == "STRING":
            out[oid] = ("OCTETS", v.strip('"').encode("latin-1"))
        elif kind == "Timeticks":
            m = re.match(r"\((\d+)\)", v)
            assert m, entry
            out[oid] = ("Timeticks", int(m.group(1)))
        elif kind == "OID":
            out[oid] = ("OID", v)
        else:
            out[oid] = (kind, int(v))
    return out


@dataclass
class NetSnmp:
    """net-snmp CLI calls with numeric, unambiguous output."""

    opts: tuple[str, ...] = ("-On", "-Ox", "-OU", "-t", "1", "-r", "1")

    def run(self, tool: str, args: list[str],
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, *self.opts, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def get(self, address: str, oids: list[str], auth: list[str]) -> dict[str, tuple[str, object]]:
        res = self.run("snmpget", [*auth, address, *oids])
        assert res.returncode == 0, res.stderr
        return parse_netsnmp(res.stdout)

    def walk(self, address: str, auth: list[str],
             root: str = ".1") -> dict[str, tuple[str, object]]:
        res = self.run("snmpbulkwalk", [*auth, address, root])
        assert res.returncode == 0, res.stderr
        walked = parse_netsnmp(res.stdout)
        return {k: v for k, v in walked.items() if v[0] != "EXCEPTION"}


@pytest.fixture(scope="session")
def netsnmp() -> NetSnmp:
    if not (shutil.which("snmpget") and shutil.which("snmpbulkwalk")):
        pytest.skip("net-snmp command-line tools (Debian package snmp) not installed")
    return NetSnmp()


@pytest.fixture(scope="session")
def recording():
    """``recording(name)`` -> :class:`Recording` of a synthetic file."""
    def load(name: str) -> Recording:
        return Recording.load(DATA / f"{name}.snmprec")
    return load


@pytest.fixture(scope="session")
def recording_at():
    """``recording_at(path)`` -> :class:`Recording` of any .snmprec file."""
    return Recording.load


@pytest.fixture(scope="session")
def loopback(worker_id: str):
    """``loopback(n)`` -> ``127.W.n.1``, W unique per xdist worker.

    Fleets bind fixed addresses; giving every worker its own 127.W.0.0/16 keeps
    parallel runs (and module-scoped fleets instantiated on two workers) apart.
    """
    second = 99 if worker_id == "master" else 100 + int(worker_id.removeprefix("gw"))

    def base(n: int) -> str:
        return f"127.{second}.{n}.1"
    return base


@pytest.fixture(scope="session")
def synthetic_dir() -> Path:
    return DATA

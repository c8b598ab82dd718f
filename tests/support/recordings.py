"""Independent reading of snmprec recordings, for expected values in tests.

Deliberately separate from ``fleetroom_agent.snmprec`` so a test's expectation
never comes from the code under test: this parser is a dozen obvious lines.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path | None:
    """``../shared`` beside the checkout (CI and developers have it), or ``$FLEETROOM_SHARED``."""
    env = os.environ.get("FLEETROOM_SHARED")
    candidate = Path(env) if env else REPO.parent / "shared"
    return candidate if (candidate / "fixtures" / "snmprec").is_dir() else None


def recordings_dir() -> Path | None:
    """The real-printer recordings, if present."""
    s = shared_dir()
    return s / "fixtures" / "snmprec" if s else None


def load(path: Path) -> dict[str, tuple[str, str]]:
    """{oid: (tag, raw value)} exactly as written in the file (leading dots removed)."""
    out: dict[str, tuple[str, str]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.count("|") < 2:
            continue
        oid, tag, value = line.split("|", 2)
        out[oid.lstrip(".")] = (tag, value)
    return out


def text(rec: dict[str, tuple[str, str]], oid: str) -> str | None:
    """A string value decoded the simple way (hex when the tag says so)."""
    if oid not in rec:
        return None
    tag, value = rec[oid]
    if tag.endswith("x"):
        return bytes.fromhex(value).decode("utf-8", errors="replace")
    return value


def integer(rec: dict[str, tuple[str, str]], oid: str) -> int | None:
    """An integer value, or None."""
    if oid not in rec:
        return None
    tag, value = rec[oid]
    if ":" in tag:  # variation module: initial=...
        for part in value.split(","):
            if part.startswith("initial="):
                return int(part.split("=", 1)[1])
        return None
    return int(value)


def column(rec: dict[str, tuple[str, str]], prefix: str) -> dict[str, tuple[str, str]]:
    """{index: (tag, value)} for every OID directly under ``prefix``."""
    p = prefix + "."
    return {oid[len(p):]: tv for oid, tv in rec.items() if oid.startswith(p)}


def manifest() -> dict[str, dict[str, str]]:
    """MANIFEST.tsv of the recordings, by file name."""
    d = recordings_dir()
    if d is None:
        return {}
    with (d / "MANIFEST.tsv").open(encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}

"""The ground truth: the agent's outbox journal against what the server holds.

The journal (``$FLEETROOM_AGENT_JOURNAL``, see :class:`fleetroom_agent.outbox.Outbox`)
has one line per item the outbox *committed*, written after the commit.  The server
side comes from :meth:`tests.support.chaos_server.ServerHost.dump`: every
``ReceivedItem`` of the agent with the canonical SHA-256 of its payload (read back from
the stored batch), the fleet ``Reading`` rows the worker made of them, and the gaps.

:func:`compare` says, per item key ``(store, stream, seq)`` and per payload hash:

* **lost** — journalled, but not on the server, and not accounted for by a gap record
  (budget drops, coalescing, a quarantined store);
* **changed** — on the server with another payload than the one committed;
* **duplicated** — a payload on the server under two keys, or a reading twice in the
  fleet tables (the unique key makes one key twice impossible; this checks it anyway);
* **unjournalled** — on the server but not in the journal.  Legitimate only for items
  committed right before a kill -9 that came before the journal append (at most one
  ``put`` per kill); the tests bound their number by that;
* **holes** — seq numbers missing inside a stream on the server that no gap explains;
* **not normalised** — reading items on the server without a fleet ``Reading`` row of
  the same payload (the fleet app keeps each reading as received, canonical JSON).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Key = tuple[str, str, int]
"""(store, stream, seq)"""


@dataclass
class Journal:
    """The parsed journal of one agent."""

    entries: dict[Key, dict[str, Any]] = field(default_factory=dict)
    order: list[Key] = field(default_factory=list)
    torn: int = 0
    """Lines that are not JSON (a kill in the middle of an append)."""
    repeated: int = 0
    """Keys journalled twice (must be 0: a committed seq is never reused)."""


def read_journal(path: Path, agent: str) -> Journal:
    """The entries of ``agent`` in ``path``."""
    j = Journal()
    if not path.exists():
        return j
    for line in path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            j.torn += 1
            continue
        if doc.get("agent") != agent:
            continue
        key = (doc["store"], doc["stream"], int(doc["seq"]))
        if key in j.entries:
            j.repeated += 1
        j.entries[key] = doc
        j.order.append(key)
    return j


def gap_covered(gaps: list[dict[str, Any]], journal: Journal) -> tuple[
        set[tuple[str, int]], set[str]]:
    """(stream, seq) pairs explained by gap records, and the stores a quarantine replaced.

    ``ranges`` name dropped or coalesced seqs of ``stream``; ``supersedes`` names gap
    records (stream ``gaps``) merged into a later one.  A ``store_corrupt`` gap arrives
    from the fresh store; it stands for everything not yet acknowledged of the stores
    journalled before that one.
    """
    covered: set[tuple[str, int]] = set()
    replaced: set[str] = set()
    first_seen: dict[str, int] = {}
    for n, key in enumerate(journal.order):
        first_seen.setdefault(key[0], n)
    for g in gaps:
        for first, last in g.get("ranges") or []:
            covered.update((g["stream"], s) for s in range(first, last + 1))
        for first, last in g.get("supersedes") or []:
            covered.update(("gaps", s) for s in range(first, last + 1))
        if g.get("reason") == "store_corrupt":
            fresh = first_seen.get(str(g.get("store")), len(journal.order))
            replaced.update(store for store, n in first_seen.items() if n < fresh)
    return covered, replaced


@dataclass
class Verdict:
    """What :func:`compare` found; ``problems()`` is empty when the guarantee held."""

    journalled: int
    on_server: int
    lost: list[Key]
    changed: list[Key]
    duplicated_payloads: list[str]
    duplicated_readings: list[tuple[str, str]]
    unjournalled: list[Key]
    holes: dict[tuple[str, str], list[int]]
    not_normalised: list[Key]
    explained_by_gaps: int
    problem_items: list[dict[str, Any]]
    torn_lines: int
    agent: dict[str, Any]

    def problems(self, *, max_unjournalled: int = 0) -> list[str]:
        """Human-readable violations (``max_unjournalled``: see the module doc)."""
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} committed item(s) lost, e.g. {self.lost[:5]}")
        if self.changed:
            out.append(f"{len(self.changed)} item(s) with another payload, e.g. "
                       f"{self.changed[:5]}")
        if self.duplicated_payloads:
            out.append(f"{len(self.duplicated_payloads)} payload(s) stored twice")
        if self.duplicated_readings:
            out.append(f"{len(self.duplicated_readings)} reading(s) twice in the fleet "
                       f"tables, e.g. {self.duplicated_readings[:3]}")
        if len(self.unjournalled) > max_unjournalled:
            out.append(f"{len(self.unjournalled)} server item(s) not in the journal "
                       f"(at most {max_unjournalled} allowed), e.g. {self.unjournalled[:5]}")
        if self.holes:
            out.append(f"seq holes no gap explains: {dict(list(self.holes.items())[:3])}")
        if self.not_normalised:
            out.append(f"{len(self.not_normalised)} reading item(s) without a fleet reading")
        if self.problem_items:
            out.append(f"{len(self.problem_items)} item(s) in state problem, e.g. "
                       f"{self.problem_items[:3]}")
        if self.agent.get("violations") or self.agent.get("status") != "active":
            out.append(f"the agent is {self.agent.get('status')} with "
                       f"{self.agent.get('violations')} policy violation(s)")
        return out

    def summary(self) -> str:
        """One line for the test log."""
        return (f"journalled {self.journalled}, on server {self.on_server}, lost "
                f"{len(self.lost)}, duplicated {len(self.duplicated_payloads)}, unjournalled "
                f"{len(self.unjournalled)}, explained by gaps {self.explained_by_gaps}, "
                f"torn journal lines {self.torn_lines}")


def compare(journal: Journal, dump: dict[str, Any], *,
            reading_streams: tuple[str, ...] = ("readings", "alerts")) -> Verdict:
    """Journal against server dump (see the module doc)."""
    server: dict[Key, dict[str, Any]] = {}
    for item in dump["items"]:
        server[(item["store"], item["stream"], int(item["seq"]))] = item
    covered, replaced = gap_covered(dump["gaps"], journal)
    lost, changed, explained = [], [], 0
    for key, entry in journal.entries.items():
        got = server.get(key)
        if got is None:
            if (key[1], key[2]) in covered or key[0] in replaced:
                explained += 1
            else:
                lost.append(key)
        elif got["sha256"] != entry["sha256"]:
            changed.append(key)
    hashes = Counter(i["sha256"] for k, i in server.items() if k[1] in reading_streams)
    dup_payloads = [h for h, n in hashes.items() if n > 1]
    fleet = Counter((r["serial"], r["taken_at"]) for r in dump["readings"])
    dup_readings = [k for k, n in fleet.items() if n > 1]
    dup_readings += [("payload", h) for h, n in Counter(
        r["sha256"] for r in dump["readings"]).items() if n > 1]
    unjournalled = sorted(k for k in server if k not in journal.entries)
    holes: dict[tuple[str, str], list[int]] = {}
    per_stream: dict[tuple[str, str], set[int]] = {}
    for store, stream, seq in server:
        per_stream.setdefault((store, stream), set()).add(seq)
    for (store, stream), seqs in per_stream.items():
        first = min(seqs)
        missing = [s for s in range(first, max(seqs) + 1)
                   if s not in seqs and (stream, s) not in covered]
        if missing:
            holes[store, stream] = missing[:20]
    # The fleet app keeps each reading "as received" (its canonical wire JSON), so the
    # hashes match the items' one to one.
    fleet_hashes = Counter(r["sha256"] for r in dump["readings"])
    not_normalised = sorted(k for k, i in server.items()
                            if k[1] in reading_streams and not fleet_hashes[i["sha256"]])
    problem_items = [{"key": k, "error": i["error"]} for k, i in server.items()
                     if i["state"] != "done"]
    return Verdict(
        journalled=len(journal.entries), on_server=len(server), lost=lost, changed=changed,
        duplicated_payloads=dup_payloads, duplicated_readings=dup_readings,
        unjournalled=unjournalled, holes=holes, not_normalised=not_normalised,
        explained_by_gaps=explained, problem_items=problem_items, torn_lines=journal.torn,
        agent=dump["agent"])


def stream_order_ok(dump: dict[str, Any]) -> list[str]:
    """Per (store, stream): items sorted by seq must have non-decreasing batch ids —
    the server received every stream in seq order.  Returns the violations."""
    out = []
    per: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i in dump["items"]:
        per.setdefault((i["store"], i["stream"]), []).append((int(i["seq"]), int(i["batch_id"])))
    for key, pairs in per.items():
        pairs.sort()
        for (s1, b1), (s2, b2) in itertools.pairwise(pairs):
            if b2 < b1:
                out.append(f"{key}: seq {s2} arrived in batch {b2}, before seq {s1} "
                           f"(batch {b1})")
                break
    return out

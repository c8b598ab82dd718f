"""The chaos checker itself: a checker that cannot fail proves nothing, so each kind of
damage is planted in an otherwise consistent journal/server pair and must be reported."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.support.chaos_readings import payload_hash
from tests.support.chaos_truth import compare, read_journal, stream_order_ok

AGENT = "a-1"
STORE = "s1"


def world(tmp_path: Path, n: int = 6) -> tuple[Path, dict[str, Any]]:
    """A journal of ``n`` readings and a server dump holding exactly them, normalised."""
    journal = tmp_path / "journal.jsonl"
    items, readings, lines = [], [], []
    for seq in range(1, n + 1):
        payload = {"serial": f"X{seq}", "taken_at": f"2025-01-01T00:00:{seq:02d}Z"}
        sha = payload_hash(payload)
        lines.append(json.dumps({"agent": AGENT, "store": STORE, "stream": "readings",
                                 "seq": seq, "sha256": sha}))
        items.append({"store": STORE, "stream": "readings", "seq": seq, "batch_id": 1 + seq // 3,
                      "state": "done", "error": "", "sha256": sha})
        readings.append({"serial": payload["serial"], "taken_at": payload["taken_at"],
                         "sha256": sha})
    journal.write_text("\n".join(lines) + "\n")
    dump = {"agent": {"status": "active", "violations": 0}, "items": items,
            "readings": readings, "gaps": [], "batches": []}
    return journal, dump


def problems(journal: Path, dump: dict[str, Any], **kw: int) -> list[str]:
    return compare(read_journal(journal, AGENT), dump).problems(**kw)


def test_a_consistent_pair_passes(tmp_path):
    journal, dump = world(tmp_path)
    assert problems(journal, dump) == []
    assert stream_order_ok(dump) == []


def test_every_kind_of_damage_is_reported(tmp_path):
    journal, good = world(tmp_path)

    lost = copy.deepcopy(good)
    del lost["items"][2]
    del lost["readings"][2]
    assert any("lost" in p for p in problems(journal, lost))
    assert any("holes" in p for p in problems(journal, lost))

    changed = copy.deepcopy(good)
    changed["items"][0]["sha256"] = "0" * 64
    assert any("another payload" in p for p in problems(journal, changed))

    twice = copy.deepcopy(good)
    twice["items"].append({**twice["items"][1], "seq": 7})
    found = problems(journal, twice, max_unjournalled=1)
    assert any("stored twice" in p for p in found)
    assert not any("not in the journal" in p for p in found)  # within the allowance
    assert any("not in the journal" in p for p in problems(journal, twice))

    refiled = copy.deepcopy(good)
    refiled["readings"].append(dict(refiled["readings"][4]))
    assert any("twice in the fleet tables" in p for p in problems(journal, refiled))

    unfiled = copy.deepcopy(good)
    del unfiled["readings"][0]
    assert any("without a fleet reading" in p for p in problems(journal, unfiled))

    suspended = copy.deepcopy(good)
    suspended["agent"] = {"status": "suspended", "violations": 5}
    assert any("suspended" in p for p in problems(journal, suspended))

    reordered = copy.deepcopy(good)
    reordered["items"][5]["batch_id"] = 0
    assert stream_order_ok(reordered)


def test_gap_records_and_a_quarantine_explain_missing_items(tmp_path):
    journal, dump = world(tmp_path)
    del dump["items"][1:3]
    del dump["readings"][1:3]
    dump["gaps"] = [{"stream": "readings", "reason": "disk_budget", "ranges": [[2, 3]],
                     "store": STORE}]
    verdict = compare(read_journal(journal, AGENT), dump)
    assert verdict.problems() == []
    assert verdict.explained_by_gaps == 2

    # a later store whose store_corrupt gap stands for what the first store still held
    with journal.open("a") as fh:
        fh.write(json.dumps({"agent": AGENT, "store": "s2", "stream": "gaps", "seq": 9,
                             "sha256": "g"}) + "\n")
    del dump["items"][-1]
    del dump["readings"][-1]
    assert any("lost" in p for p in compare(read_journal(journal, AGENT), dump).problems())
    dump["items"].append({"store": "s2", "stream": "gaps", "seq": 9, "batch_id": 9,
                          "state": "done", "error": "", "sha256": "g"})
    dump["gaps"].append({"stream": "", "reason": "store_corrupt", "ranges": [],
                         "store": "s2", "detail": {"quarantined_as": "x"}})
    assert compare(read_journal(journal, AGENT), dump).problems() == []

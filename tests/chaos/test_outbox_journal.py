"""The outbox journal: the side file of every committed item the chaos tests compare with
the server.  Real SQLite files; each line is checked against the rows in the store."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from fleetroom_agent.outbox import GAPS_STREAM, NewItem, Outbox, Priority
from fleetroom_agent.outbox.store import JOURNAL_ENV

AGENT = "agent-journal"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_off_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    with Outbox(tmp_path / "o.db", AGENT) as box:
        box.put("readings", b'{"a":1}')
        assert box.journal is None
    assert sorted(p.name for p in tmp_path.iterdir() if "journal" in p.name) == []


def test_one_line_per_committed_item_with_its_hash(tmp_path):
    journal = tmp_path / "journal.jsonl"
    payloads = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    with Outbox(tmp_path / "o.db", AGENT, journal=journal) as box:
        seqs = box.put_many([NewItem("readings", p, Priority.NORMAL, f"device:{i}")
                             for i, p in enumerate(payloads)])
        alert = box.put("alerts", b'{"x":true}', priority=Priority.CRITICAL)
        store = box.store_id
        stored = {(i.stream, i.seq): i.payload for i in box.next_batch()}
    got = lines(journal)
    assert [(g["stream"], g["seq"]) for g in got] == [
        *(("readings", s) for s in seqs), ("alerts", alert)]
    for g in got:
        assert g["agent"] == AGENT
        assert g["store"] == store
        assert g["sha256"] == hashlib.sha256(stored[g["stream"], g["seq"]]).hexdigest()
        assert g["bytes"] == len(stored[g["stream"], g["seq"]])
    assert [g["key"] for g in got] == ["device:0", "device:1", "device:2", None]
    assert [g["priority"] for g in got] == [2, 2, 2, 0]


def test_a_rolled_back_put_writes_nothing(tmp_path):
    journal = tmp_path / "journal.jsonl"
    with Outbox(tmp_path / "o.db", AGENT, journal=journal) as box:
        box.put("readings", b"1")
        # The second item's priority is invalid: the first was inserted inside the same
        # transaction, which is rolled back, so neither is committed nor journalled.
        with pytest.raises(ValueError):
            box.put_many([NewItem("readings", b"2"),
                          NewItem("readings", b"3", priority=99)])  # type: ignore[arg-type]
        box.put("readings", b"4")
        rows = [(i.seq, i.payload) for i in box.next_batch()]
    assert [(g["seq"], g["sha256"]) for g in lines(journal)] == [
        (seq, hashlib.sha256(p).hexdigest()) for seq, p in rows]
    assert len(rows) == 2


def test_gap_records_are_journalled_too(tmp_path, monkeypatch):
    journal = tmp_path / "journal.jsonl"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    with Outbox(tmp_path / "o.db", AGENT, budget_bytes=2000) as box:
        for i in range(30):
            box.put("readings", json.dumps({"i": i, "pad": "x" * 100}).encode())
        left = {(i.stream, i.seq) for i in box.next_batch(max_items=10_000)}
    got = lines(journal)
    gaps = [g for g in got if g["stream"] == GAPS_STREAM]
    assert gaps, "the budget dropped items, so a gap record was committed"
    assert len([g for g in got if g["stream"] == "readings"]) == 30
    # every item still in the store is in the journal
    assert left <= {(g["stream"], g["seq"]) for g in got}


def test_an_unwritable_journal_never_fails_the_put(tmp_path, caplog):
    bad = tmp_path / "a-directory"
    bad.mkdir()
    with caplog.at_level(logging.ERROR), Outbox(tmp_path / "o.db", AGENT, journal=bad) as box:
        assert box.put("readings", b"kept") == 1
        assert box.next_batch()[0].payload == b"kept"
    assert "cannot append 1 item(s) to the journal" in caplog.text

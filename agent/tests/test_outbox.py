"""The outbox against real SQLite files: ordering, acks, budget, corruption, kill -9."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from fleetroom_agent.outbox import (
    GAPS_STREAM,
    GapReason,
    ItemKey,
    NewItem,
    Outbox,
    Priority,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

AGENT = "agent-1"


def _open(path: Path, **kw) -> Outbox:
    return Outbox(path, AGENT, **kw)


def _all(box: Outbox) -> list:
    return box.next_batch(max_items=1_000_000, max_bytes=1 << 40)


def _gaps(box: Outbox) -> list[dict]:
    return [json.loads(i.payload) for i in _all(box) if i.stream == GAPS_STREAM]


def test_pragmas_and_schema_version(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    with _open(path) as box:
        box.put("readings", b"x")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()
    with _open(path) as box:  # reopening an up-to-date store migrates nothing
        assert box.next_batch()[0].payload == b"x"


def test_in_data_dir_creates_directory(tmp_path):
    with Outbox.in_data_dir(tmp_path / "data", AGENT) as box:
        assert box.put("readings", b"a") == 1
    assert (tmp_path / "data" / "outbox.sqlite3").exists()


def test_seq_per_stream_and_priority_order(tmp_path):
    with _open(tmp_path / "o.db") as box:
        assert box.put("readings", b"r1") == 1
        assert box.put("readings", b"r2", priority=Priority.LOW) == 2
        assert box.put("alerts", b"a1", priority=Priority.CRITICAL) == 1
        assert box.put("readings", b"r3") == 3
        assert box.put("alerts", b"a2", priority=Priority.HIGH) == 2
        order = [(i.stream, i.seq) for i in box.next_batch()]
        assert order == [
            ("alerts", 1),  # critical
            ("alerts", 2),  # high
            ("readings", 1),  # normal, in insertion order
            ("readings", 3),
            ("readings", 2),  # low
        ]
        # next_batch does not remove anything
        assert len(box.next_batch()) == 5


def test_put_rejects_reserved_stream_and_non_bytes(tmp_path):
    with _open(tmp_path / "o.db") as box:
        with pytest.raises(ValueError):
            box.put(GAPS_STREAM, b"x")
        with pytest.raises(TypeError):
            box.put("readings", "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            box.put("", b"x")


def test_put_many_is_one_transaction(tmp_path):
    with _open(tmp_path / "o.db") as box:
        seqs = box.put_many([NewItem("readings", b"a"), NewItem("readings", b"b"),
                             NewItem("alerts", b"c")])
        assert seqs == [1, 2, 1]
        with pytest.raises(TypeError):
            box.put_many([NewItem("readings", b"d"), NewItem("readings", 5)])  # type: ignore[arg-type]
        # a failure inside the transaction (an invalid priority) rolls back the whole batch
        with pytest.raises(ValueError):
            box.put_many([NewItem("readings", b"d"), NewItem("readings", b"e", 99)])  # type: ignore[arg-type]
        assert [i.payload for i in box.next_batch()] == [b"a", b"b", b"c"]
        assert box.put("readings", b"e") == 3


def test_batch_limits(tmp_path):
    with _open(tmp_path / "o.db") as box:
        for n in range(10):
            box.put("readings", bytes([n]) * 100)
        assert len(box.next_batch(max_items=3)) == 3
        assert len(box.next_batch(max_bytes=350)) == 3
        assert len(box.next_batch(max_bytes=300)) == 3
        assert len(box.next_batch(max_bytes=299)) == 2
        # an item larger than max_bytes is still delivered alone, never blocking the queue
        box.ack("readings", 10)
        box.put("readings", b"z" * 5000)
        box.put("readings", b"y")
        batch = box.next_batch(max_bytes=1000)
        assert [len(i.payload) for i in batch] == [5000]


def test_ack_ranges_delete_inclusive_ranges_in_one_call(tmp_path):
    with _open(tmp_path / "o.db") as box:
        for n in range(1, 9):
            box.put("readings", f"r{n}".encode())
        box.put("alerts", b"a1")
        # 2..4 and 7..7 of readings, a huge range over alerts, an unknown stream
        assert box.ack_ranges([("readings", 2, 4), ("readings", 7, 7),
                               ("alerts", 1, 10**12), ("nope", 1, 5)]) == 5
        assert box.ack_ranges([("readings", 3, 4)]) == 0  # again: harmless
        assert box.ack_ranges([]) == 0
        assert [(i.stream, i.seq) for i in _all(box)] == [
            ("readings", 1), ("readings", 5), ("readings", 6), ("readings", 8)]


def test_ack_semantics_survive_reopen(tmp_path):
    path = tmp_path / "o.db"
    with _open(path) as box:
        for n in range(1, 6):
            box.put("readings", f"r{n}".encode())
        box.put("alerts", b"a1")
        assert box.ack("readings", 3) == 3
        assert box.ack("readings", 3) == 0  # twice is harmless
        assert box.ack("readings", 1) == 0  # older ack is harmless
        assert box.ack_keys([ItemKey("alerts", 1), ItemKey("alerts", 1),
                             ItemKey("nope", 9)]) == 1
        assert box.ack_keys([ItemKey("alerts", 1)]) == 0
    with _open(path) as box:
        assert [(i.stream, i.seq, i.payload) for i in box.next_batch()] == [
            ("readings", 4, b"r4"), ("readings", 5, b"r5")]
        # seq keeps increasing after reopen even for a fully acknowledged stream
        assert box.put("alerts", b"a2") == 2
        assert box.put("readings", b"r6") == 6
        stats = box.stats()
        assert stats.streams["readings"].count == 3
        assert stats.streams["readings"].bytes == 6
        assert stats.streams["alerts"].count == 1
        assert stats.total_items == 4
        assert stats.oldest_unsent_at is not None


def test_other_agent_rows_are_invisible(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path, "a") as a:
        a.put("readings", b"from-a")
    with Outbox(path, "b") as b:
        assert b.next_batch() == []
        assert b.put("readings", b"from-b") == 1


def test_clock_does_not_decide_order(tmp_path):
    times = iter([1000.0, 10.0, 5000.0, 1.0])
    with _open(tmp_path / "o.db", clock=lambda: next(times)) as box:
        for n in range(4):
            box.put("readings", bytes([n]))
        assert [i.payload for i in box.next_batch()] == [b"\x00", b"\x01", b"\x02", b"\x03"]
        assert box.stats().oldest_unsent_at == 1.0


def test_concurrent_puts_from_threads(tmp_path):
    path = tmp_path / "o.db"
    threads, per_thread = 6, 40
    box = _open(path)
    results: list[list[int]] = [[] for _ in range(threads)]

    def work(idx: int) -> None:
        for n in range(per_thread):
            results[idx].append(box.put("readings", f"{idx}:{n}".encode()))

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seqs = [s for r in results for s in r]
    assert sorted(seqs) == list(range(1, threads * per_thread + 1))
    for r in results:  # each thread saw its own seqs strictly increase
        assert r == sorted(r)
    box.close()


async def test_usable_from_asyncio_via_to_thread(tmp_path):
    import asyncio

    box = _open(tmp_path / "o.db")
    seqs = await asyncio.gather(
        *(asyncio.to_thread(box.put, "readings", bytes([n])) for n in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    batch = await asyncio.to_thread(box.next_batch, 100)
    assert len(batch) == 50
    await asyncio.to_thread(box.ack, "readings", 50)
    assert box.stats().total_items == 0
    box.close()


def test_two_instances_on_one_file_share_seqs(tmp_path):
    path = tmp_path / "o.db"
    a, b = _open(path), _open(path)
    seqs = [a.put("readings", b"1"), b.put("readings", b"2"), a.put("readings", b"3")]
    assert seqs == [1, 2, 3]
    a.close()
    b.close()


def test_budget_coalesces_to_newest_per_key(tmp_path):
    path = tmp_path / "o.db"
    devices, rounds, size = 10, 5, 100
    with _open(path) as box:
        for r in range(rounds):
            for d in range(devices):
                box.put("readings", bytes([r]) * size, coalesce_key=f"counters:{d}")
        box.put("alerts", b"!" * size, priority=Priority.CRITICAL)
    total_data = (devices * rounds + 1) * size
    # reopen with a budget that coalescing alone can satisfy
    budget = (devices + 1) * size + 1000
    assert total_data > budget
    with _open(path, budget_bytes=budget) as box:
        items = _all(box)
        readings = [i for i in items if i.stream == "readings"]
        assert len(readings) == devices
        assert {i.payload for i in readings} == {bytes([rounds - 1]) * size}
        gaps = _gaps(box)
        assert len(gaps) == 1
        (gap,) = gaps
        assert gap["reason"] == GapReason.COALESCED
        assert gap["stream"] == "readings"
        assert gap["count"] == devices * (rounds - 1)
        assert gap["first_seq"] == 1
        assert gap["last_seq"] == devices * (rounds - 1)
        assert gap["ranges"] == [[1, devices * (rounds - 1)]]
        assert [i.stream for i in items].count("alerts") == 1


def test_budget_drops_oldest_low_priority_with_exact_gap(tmp_path):
    path = tmp_path / "o.db"
    size, n_low, n_normal, n_crit = 100, 8, 10, 3
    with _open(path) as box:
        for _ in range(n_normal):
            box.put("readings", b"n" * size)
        for _ in range(n_low):
            box.put("gauges", b"l" * size, priority=Priority.LOW)
        for _ in range(n_crit):
            box.put("alerts", b"c" * size, priority=Priority.CRITICAL)
    total = (n_low + n_normal + n_crit) * size
    budget = 1000
    need = -(-(total - budget) // size)  # ceil: items of `size` bytes to drop (ratio 1.0)
    assert need > n_low  # all LOW items go first, then the oldest NORMAL ones
    with _open(path, budget_bytes=budget, low_water_ratio=1.0) as box:
        items = _all(box)
        data = [i for i in items if i.stream != GAPS_STREAM]
        assert sum(len(i.payload) for i in data) <= budget
        assert [i.seq for i in data if i.stream == "alerts"] == [1, 2, 3]
        assert [i.seq for i in data if i.stream == "gauges"] == []
        dropped_normal = need - n_low
        assert [i.seq for i in data if i.stream == "readings"] == list(
            range(dropped_normal + 1, n_normal + 1))
        gaps = {g["stream"]: g for g in _gaps(box)}
        assert gaps["gauges"]["count"] == n_low
        assert gaps["gauges"]["ranges"] == [[1, n_low]]
        assert gaps["readings"]["count"] == dropped_normal
        assert gaps["readings"]["ranges"] == [[1, dropped_normal]]
        assert {g["reason"] for g in gaps.values()} == {GapReason.DISK_BUDGET}
        # gap records lead the queue: they are critical
        assert items[0].stream in {"alerts", GAPS_STREAM}


def test_critical_items_are_never_dropped(tmp_path):
    with _open(tmp_path / "o.db", budget_bytes=500) as box:
        for _ in range(20):
            box.put("alerts", b"c" * 100, priority=Priority.CRITICAL)
        assert len([i for i in _all(box) if i.stream == "alerts"]) == 20
        assert _gaps(box) == []


def test_budget_on_put_accounts_for_every_seq(tmp_path):
    """Under a steady stream over budget, every seq is either stored or in a gap record."""
    rng = random.Random(7)
    put: dict[str, list[int]] = {"readings": [], "status": []}
    with _open(tmp_path / "o.db", budget_bytes=5000) as box:
        for n in range(300):
            stream = rng.choice(["readings", "status"])
            prio = rng.choice([Priority.NORMAL, Priority.LOW])
            ckey = f"counters:{rng.randrange(5)}" if stream == "readings" else None
            put[stream].append(box.put(stream, bytes(rng.randrange(20, 200)) + bytes([n % 256]),
                                       priority=prio, coalesce_key=ckey))
        items = _all(box)
        gaps = _gaps(box)
        for stream, seqs in put.items():
            present = {i.seq for i in items if i.stream == stream}
            missing: list[int] = []
            for g in gaps:
                if g["stream"] == stream:
                    for first, last in g["ranges"]:
                        missing.extend(range(first, last + 1))
            assert len(missing) == len(set(missing))  # each loss reported once
            assert sum(g["count"] for g in gaps if g["stream"] == stream) == len(missing)
            assert present.isdisjoint(missing)
            assert present | set(missing) == set(seqs)
        assert {g["reason"] for g in gaps} <= {GapReason.COALESCED, GapReason.DISK_BUDGET}
        data_bytes = sum(len(i.payload) for i in items if i.stream != GAPS_STREAM)
        assert data_bytes <= 5000
        # pending gap records are merged: at most one per (stream, reason) ...
        assert len(gaps) == len({(g["stream"], g["reason"]) for g in gaps})
        # ... and every hole in the gaps stream itself is explained by "supersedes"
        gap_seqs = {i.seq for i in items if i.stream == GAPS_STREAM}
        superseded = [q for g in gaps for a, b in g.get("supersedes", []) for q in range(a, b + 1)]
        assert len(superseded) == len(set(superseded))
        assert gap_seqs.isdisjoint(superseded)
        last_gap_seq = box.stats().streams[GAPS_STREAM].last_seq
        assert gap_seqs | set(superseded) == set(range(1, last_gap_seq + 1))


def _assert_quarantined(tmp_path: Path, path: Path) -> None:
    with _open(path) as box:
        assert box.quarantined_to is not None
        assert box.quarantined_to.exists()
        assert box.quarantined_to.name.startswith(path.name + ".corrupt-")
        gaps = _gaps(box)
        assert len(gaps) == 1
        assert gaps[0]["reason"] == GapReason.STORE_CORRUPT
        assert gaps[0]["detail"]["quarantined_as"] == box.quarantined_to.name
        # the fresh store works, and its seqs cannot collide with the lost store's
        seq = box.put("readings", b"after")
        assert seq > 1_000_000
        assert box.stats().quarantined_to == box.quarantined_to
    # no crash loop: the next open is clean and keeps the gap record
    with _open(path) as box:
        assert box.quarantined_to is None
        assert len(_gaps(box)) == 1
        assert box.put("readings", b"again") == seq + 1
    assert len(list(tmp_path.glob(path.name + ".corrupt-*"))) >= 1


def test_random_bytes_file_is_quarantined(tmp_path):
    path = tmp_path / "o.db"
    path.write_bytes(random.Random(1).randbytes(64 * 1024))
    _assert_quarantined(tmp_path, path)


def test_random_bytes_with_sqlite_header_is_quarantined(tmp_path):
    path = tmp_path / "o.db"
    path.write_bytes(b"SQLite format 3\x00" + random.Random(2).randbytes(64 * 1024))
    _assert_quarantined(tmp_path, path)


def test_truncated_database_is_quarantined(tmp_path):
    path = tmp_path / "o.db"
    with _open(path) as box:
        for n in range(300):
            box.put("readings", bytes([n % 256]) * 500)
    # close() checkpointed the WAL; cut the main file in half
    size = path.stat().st_size
    assert size > 100_000
    with path.open("r+b") as fh:
        fh.truncate(size // 2)
    _assert_quarantined(tmp_path, path)


def test_garbage_pages_inside_database_are_quarantined(tmp_path):
    path = tmp_path / "o.db"
    with _open(path) as box:
        for n in range(300):
            box.put("readings", bytes([n % 256]) * 500)
    conn = sqlite3.connect(path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as fh:  # overwrite pages 2-4 (b-tree pages), keep the header
        fh.seek(page)
        fh.write(random.Random(3).randbytes(3 * page))
    _assert_quarantined(tmp_path, path)


def test_newer_schema_is_refused_not_quarantined(tmp_path):
    path = tmp_path / "o.db"
    with _open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        _open(path)
    assert path.exists()


def test_raise_seq_floor(tmp_path):
    with _open(tmp_path / "o.db") as box:
        box.put("readings", b"a")
        box.raise_seq_floor("readings", 500)
        assert box.put("readings", b"b") == 501
        box.raise_seq_floor("readings", 10)  # never lowers
        assert box.put("readings", b"c") == 502


# --------------------------------------------------------------- kill -9 durability

_CHILD = textwrap.dedent(
    """
    import sys
    from fleetroom_agent.outbox import Outbox, Priority
    path, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    box = Outbox(path, "agent-1")
    for n in range(start, start + count):
        prio = Priority.CRITICAL if n % 7 == 0 else Priority.NORMAL
        seq = box.put("readings", str(n).encode(), priority=prio)
        sys.stdout.write(f"{n} {seq}\\n")
        sys.stdout.flush()
    """
)


def test_kill9_loses_no_returned_put(tmp_path):
    path = tmp_path / "o.db"
    rng = random.Random()
    printed: dict[int, int] = {}
    next_n = 0
    for _ in range(10):
        count = 1000
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(next_n), str(count)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ) as proc:
            assert proc.stdout is not None
            kill_after = rng.randrange(1, count // 3)
            lines = [proc.stdout.readline() for _ in range(kill_after)]
            proc.send_signal(signal.SIGKILL)
            # lines the child wrote before dying were also confirmed puts
            lines.extend(proc.stdout)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        for line in lines:
            if line.endswith("\n"):  # a line cut by the kill is not a confirmation
                n, seq = map(int, line.split())
                printed[n] = seq
        next_n += count
    with _open(path) as box:
        stored = {i.seq: int(i.payload) for i in _all(box)}
        stored_ns = sorted(stored.values())
    assert len(stored_ns) == len(set(stored_ns)), "duplicate payloads"
    for n, seq in printed.items():
        assert stored.get(seq) == n, f"put {n} returned seq {seq} but it is not stored"
    assert len(printed) >= 10
    # seqs grow with put order, across all the killed processes
    by_n = [printed[n] for n in sorted(printed)]
    assert by_n == sorted(by_n)
    assert len(set(by_n)) == len(by_n)


# ---------------------------------------------------------- property test vs model

STREAMS = ["alerts", "readings"]


class OutboxModel(RuleBasedStateMachine):
    """put/ack/reopen in any order behaves like a dict of unacked items."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="outbox-prop-")
        self.path = Path(self.dir) / "o.db"
        self.box = _open(self.path)
        self.model: dict[tuple[str, int], tuple[int, bytes, int]] = {}
        self.last_seq = dict.fromkeys(STREAMS, 0)
        self.order = 0

    @rule(stream=st.sampled_from(STREAMS), payload=st.binary(max_size=20),
          prio=st.sampled_from(list(Priority)))
    def put(self, stream, payload, prio):
        seq = self.box.put(stream, payload, priority=prio)
        assert seq == self.last_seq[stream] + 1
        self.last_seq[stream] = seq
        self.order += 1
        self.model[(stream, seq)] = (int(prio), payload, self.order)

    @rule(stream=st.sampled_from(STREAMS), up_to=st.integers(-1, 30))
    def ack(self, stream, up_to):
        expected = [k for k in self.model if k[0] == stream and k[1] <= up_to]
        assert self.box.ack(stream, up_to) == len(expected)
        for k in expected:
            del self.model[k]

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def ack_some_keys(self, data):
        keys = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=4))
        unique = set(keys)
        assert self.box.ack_keys([ItemKey(s, q) for s, q in keys]) == len(unique)
        for k in unique:
            del self.model[k]

    @rule()
    def reopen(self):
        self.box.close()
        self.box = _open(self.path)

    @rule(max_items=st.integers(1, 10))
    def batch_is_model_prefix(self, max_items):
        want = sorted(self.model.items(), key=lambda kv: (kv[1][0], kv[1][2]))[:max_items]
        got = self.box.next_batch(max_items=max_items)
        assert [(i.stream, i.seq, i.payload) for i in got] == [
            (k[0], k[1], v[1]) for k, v in want]

    @invariant()
    def depth_matches(self):
        stats = self.box.stats()
        assert stats.total_items == len(self.model)
        assert stats.total_bytes == sum(len(v[1]) for v in self.model.values())

    def teardown(self):
        self.box.close()
        shutil.rmtree(self.dir, ignore_errors=True)


OutboxModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxModel = OutboxModel.TestCase


class BudgetedOutboxModel(RuleBasedStateMachine):
    """Under a tight budget, every seq ever returned is stored, acked, or gap-reported."""

    BUDGET = 2000

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="outbox-budget-")
        self.path = Path(self.dir) / "o.db"
        self.box = _open(self.path, budget_bytes=self.BUDGET)
        self.returned: dict[str, set[int]] = {s: set() for s in STREAMS}
        self.critical: dict[str, set[int]] = {s: set() for s in STREAMS}
        self.acked: dict[str, set[int]] = {s: set() for s in STREAMS}

    @rule(stream=st.sampled_from(STREAMS), size=st.integers(1, 400),
          prio=st.sampled_from(list(Priority)), key=st.none() | st.integers(0, 3))
    def put(self, stream, size, prio, key):
        ckey = None if key is None else f"counters:{key}"
        seq = self.box.put(stream, b"p" * size, priority=prio, coalesce_key=ckey)
        self.returned[stream].add(seq)
        if prio == Priority.CRITICAL:
            self.critical[stream].add(seq)

    @rule(max_items=st.integers(1, 8))
    def ack_a_batch(self, max_items):
        keys = [i.key for i in self.box.next_batch(max_items=max_items)
                if i.stream != GAPS_STREAM]
        self.box.ack_keys(keys)
        for k in keys:
            self.acked[k.stream].add(k.seq)

    @rule()
    def reopen(self):
        self.box.close()
        self.box = _open(self.path, budget_bytes=self.BUDGET)

    @invariant()
    def every_seq_accounted_for(self):
        items = _all(self.box)
        gaps = _gaps(self.box)
        for stream in STREAMS:
            present = {i.seq for i in items if i.stream == stream}
            reported = [q for g in gaps if g["stream"] == stream
                        for a, b in g["ranges"] for q in range(a, b + 1)]
            assert len(reported) == len(set(reported))
            parts = [present, self.acked[stream], set(reported)]
            assert sum(len(p) for p in parts) == len(self.returned[stream])
            assert set().union(*parts) == self.returned[stream]
            assert self.critical[stream] <= present | self.acked[stream]
        data = sum(len(i.payload) for i in items
                   if i.stream != GAPS_STREAM and i.priority != Priority.CRITICAL)
        assert data <= self.BUDGET

    def teardown(self):
        self.box.close()
        shutil.rmtree(self.dir, ignore_errors=True)


BudgetedOutboxModel.TestCase.settings = settings(
    max_examples=30, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBudgetedOutboxModel = BudgetedOutboxModel.TestCase

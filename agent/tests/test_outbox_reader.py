"""The read-only outbox reader against real SQLite files and a real writing process.

What is checked: it never creates, changes, renames or locks anything (a snapshot
of every file in the directory — names, bytes, mtimes — before and after), and its
figures are those the writer enqueued minus what it acknowledged (computed here
from the writer's own plan, not read back through the outbox).
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fleetroom_agent.outbox import Outbox, ReadState, read_outbox_status

AGENT = "agent-1"
BASE_T = 1_700_000_000.0


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime (ns), by name."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.iterdir()) if p.is_file()}


def filled_store(path: Path, n: int = 300) -> None:
    with Outbox(path, AGENT) as box:
        for i in range(n):
            box.put("readings", bytes([i % 256]) * 500)


# ------------------------------------------------------------------ missing / empty

def test_missing_file_creates_nothing(tmp_path):
    reading = read_outbox_status(tmp_path / "outbox.sqlite3", AGENT)
    assert reading.state is ReadState.MISSING
    assert reading.stats is None
    assert reading.detail == "no outbox yet"
    assert list(tmp_path.iterdir()) == []
    nowhere = tmp_path / "no-such-dir" / "outbox.sqlite3"
    assert read_outbox_status(nowhere, AGENT).state is ReadState.MISSING
    assert list(tmp_path.iterdir()) == []


def test_zero_byte_file_is_an_empty_outbox_and_stays_zero_bytes(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    path.touch()
    before = snapshot(tmp_path)
    reading = read_outbox_status(path, AGENT)
    assert reading.state is ReadState.EMPTY
    assert reading.stats is not None
    assert reading.stats.total_items == 0
    assert snapshot(tmp_path) == before


def test_path_with_uri_characters(tmp_path):
    directory = tmp_path / "odd ?mode=rwc#x%41"
    directory.mkdir()
    path = directory / "outbox.sqlite3"
    filled_store(path, 5)
    before = snapshot(directory)
    reading = read_outbox_status(path, AGENT)
    assert reading.state is ReadState.OK
    assert reading.stats is not None
    assert reading.stats.total_items == 5
    assert snapshot(directory) == before
    # and the URI trick did not create a store under the unquoted name
    assert read_outbox_status(directory / "missing.sqlite3", AGENT).state is ReadState.MISSING
    assert sorted(p.name for p in directory.iterdir()) == sorted(before)


# ------------------------------------------------------------------ damaged / foreign

def _truncated(path: Path) -> None:
    filled_store(path)
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 2)


def _garbage_pages(path: Path) -> None:
    filled_store(path)
    conn = sqlite3.connect(path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as fh:
        fh.seek(page)
        fh.write(random.Random(3).randbytes(3 * page))


CORRUPTIONS = {
    "random-bytes": lambda p: p.write_bytes(random.Random(1).randbytes(64 * 1024)),
    "sqlite-header-then-garbage": lambda p: p.write_bytes(
        b"SQLite format 3\x00" + random.Random(2).randbytes(64 * 1024)),
    "truncated": _truncated,
    "garbage-pages": _garbage_pages,
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_file_is_reported_and_left_untouched(tmp_path, kind, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "outbox.sqlite3"
    CORRUPTIONS[kind](path)
    (data / "outbox.sqlite3.reserve").unlink(missing_ok=True)
    journal = tmp_path / "journal.jsonl"  # a writer opening this store would journal a gap
    monkeypatch.setenv("FLEETROOM_AGENT_JOURNAL", str(journal))
    before = snapshot(data)
    for _ in range(3):  # repeated status requests change nothing either
        reading = read_outbox_status(path, AGENT)
        assert reading.state is ReadState.CORRUPT, reading
        assert reading.stats is None
        assert reading.detail
    assert snapshot(data) == before  # same names (no .corrupt-*, -wal, .reserve)
    assert not journal.exists()
    # the writer still finds it corrupt and quarantines it: the reader hid nothing
    with Outbox(path, AGENT) as box:
        assert box.quarantined_to is not None


def test_foreign_sqlite_database_is_reported_untouched(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('someone else''s data')")
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    reading = read_outbox_status(path, AGENT)
    assert reading.state is ReadState.FOREIGN
    assert snapshot(tmp_path) == before
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    before = snapshot(tmp_path)
    reading = read_outbox_status(path, AGENT)
    assert reading.state is ReadState.FOREIGN
    assert reading.detail is not None
    assert "0x4d2" in reading.detail
    assert snapshot(tmp_path) == before


def test_newer_schema_is_reported_not_migrated(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    filled_store(path, 3)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = snapshot(tmp_path)
    reading = read_outbox_status(path, AGENT)
    assert reading.state is ReadState.TOO_NEW
    assert reading.detail is not None
    assert "99" in reading.detail
    assert snapshot(tmp_path) == before


def test_unreadable_file_is_an_answer_not_an_exception(tmp_path):
    (tmp_path / "outbox.sqlite3").mkdir()  # not a file at all
    reading = read_outbox_status(tmp_path / "outbox.sqlite3", AGENT)
    assert reading.state is ReadState.UNREADABLE
    assert reading.detail
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox.sqlite3"]
    if os.geteuid() == 0:
        return  # root reads every file
    path = tmp_path / "o2.sqlite3"
    filled_store(path, 3)
    path.chmod(0)
    try:
        reading = read_outbox_status(path, AGENT)
    finally:
        path.chmod(0o600)
    assert reading.state is ReadState.UNREADABLE


# ------------------------------------------------------------------ a live writer

_WRITER = textwrap.dedent(
    """
    import sys
    from fleetroom_agent.outbox import NewItem, Outbox
    path, batches, acked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tick = [BASE_T]
    def clock():
        tick[0] += 1.0
        return tick[0]
    box = Outbox(path, "agent-1", clock=clock)
    for b in range(batches):
        box.put_many([NewItem("readings", b"r" * (b % 50 + 1)) for _ in range(7)]
                     + [NewItem("status", b"sss")])
        if b == batches // 2:
            box.ack("readings", acked)  # an ack mid-way: deletes + TRUNCATE checkpoint
        print(b, flush=True)
    print("done", flush=True)
    sys.stdin.readline()
    box.close()
    """
).replace("BASE_T", repr(BASE_T))


def test_live_outbox_written_by_another_process(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    batches, acked = 200, 70  # 8 items a batch: 7 readings (seq 7b+1..7b+7), 1 status
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(batches), str(acked)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        seen: list[int] = []
        committed = -1
        line = proc.stdout.readline()
        while line.strip() != "done":
            committed = int(line)
            reading = read_outbox_status(path, AGENT)
            assert reading.state is ReadState.OK, reading
            assert reading.stats is not None
            st = reading.stats
            assert st.total_items == sum(s.count for s in st.streams.values())
            status_items = st.streams["status"].count
            # one snapshot: every batch it holds is complete (put_many is one transaction)
            assert status_items >= committed + 1
            assert st.streams["readings"].last_seq == 7 * status_items
            seen.append(status_items)
            line = proc.stdout.readline()
        assert committed == batches - 1
        assert seen == sorted(seen)
        assert len(seen) == batches

        # the writer is idle but alive (its -wal and -shm exist): exact figures
        names_live = sorted(p.name for p in tmp_path.iterdir())
        assert "outbox.sqlite3-wal" in names_live
        reading = read_outbox_status(path, AGENT)
        _assert_final(reading, batches, acked)
        assert sorted(p.name for p in tmp_path.iterdir()) == names_live

        proc.stdin.write("\n")
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # the writer is gone (it removed -wal/-shm): the reader must not bring them back
    before = snapshot(tmp_path)
    assert "outbox.sqlite3-wal" not in before
    _assert_final(read_outbox_status(path, AGENT), batches, acked)
    assert snapshot(tmp_path) == before


def _assert_final(reading, batches: int, acked: int) -> None:
    assert reading.state is ReadState.OK, reading
    st = reading.stats
    readings = st.streams["readings"]
    assert readings.count == 7 * batches - acked
    assert readings.last_seq == 7 * batches
    # payload of every reading in batch b is b % 50 + 1 bytes; seqs 1..acked are gone
    assert readings.bytes == sum(b % 50 + 1 for seq in range(acked + 1, 7 * batches + 1)
                                 for b in [(seq - 1) // 7])
    status = st.streams["status"]
    assert (status.count, status.bytes, status.last_seq) == (batches, 3 * batches, batches)
    # created_at is the writer's clock: BASE_T + the item's position (8 per batch)
    first_reading = acked + 1
    b, i = divmod(first_reading - 1, 7)
    assert readings.oldest_created_at == BASE_T + 8 * b + i + 1
    assert status.oldest_created_at == BASE_T + 8
    assert st.oldest_unsent_at == BASE_T + 8
    assert st.total_items == readings.count + batches
    assert st.total_bytes == readings.bytes + 3 * batches
    assert st.quarantined_to is None
    assert st.budget_bytes is None


def test_other_agents_rows_are_not_counted(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path, AGENT) as mine, Outbox(path, "agent-2") as other:
        mine.put("readings", b"x")
        other.put("readings", b"yy")
        other.put("readings", b"zz")
    reading = read_outbox_status(path, AGENT)
    assert reading.stats is not None
    assert reading.stats.total_items == 1
    assert read_outbox_status(path, "agent-2").stats.total_items == 2  # type: ignore[union-attr]


# ------------------------------------------------------------------ busy

_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE streams SET bytes = bytes")
    conn.execute("COMMIT")  # the exclusive lock stays until the connection closes
    print("holding", flush=True)
    sys.stdin.readline()
    conn.close()
    """
)


def test_store_held_exclusively_answers_busy_quickly(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    filled_store(path, 10)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "holding"
        names = sorted(p.name for p in tmp_path.iterdir())
        started = time.monotonic()
        reading = read_outbox_status(path, AGENT, busy_timeout_ms=200)
        elapsed = time.monotonic() - started
        assert reading.state is ReadState.BUSY, reading
        assert reading.stats is None
        assert elapsed < 2.0
        assert sorted(p.name for p in tmp_path.iterdir()) == names
        proc.stdin.write("\n")
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reading = read_outbox_status(path, AGENT)  # released: figures again
    assert reading.state is ReadState.OK
    assert reading.stats is not None
    assert reading.stats.total_items == 10


# ------------------------------------------------------------------ a killed writer

_KILLED = textwrap.dedent(
    """
    import sys, time
    from fleetroom_agent.outbox import Outbox
    box = Outbox(sys.argv[1], "agent-1")
    for n in range(int(sys.argv[2])):
        box.put("readings", b"%d" % n)
    print("put", flush=True)
    time.sleep(60)
    """
)


def test_store_left_by_a_killed_writer(tmp_path):
    """kill -9 leaves ``-wal`` and ``-shm``; the committed items in the WAL count."""
    path = tmp_path / "outbox.sqlite3"
    n = 40
    with subprocess.Popen([sys.executable, "-c", _KILLED, str(path), str(n)],
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "put"
        proc.kill()
        proc.wait()
    before = snapshot(tmp_path)
    assert {"outbox.sqlite3-wal", "outbox.sqlite3-shm"} <= set(before)
    reading = read_outbox_status(path, AGENT)
    assert reading.state is ReadState.OK, reading
    assert reading.stats is not None
    assert reading.stats.total_items == n
    assert reading.stats.total_bytes == sum(len(b"%d" % i) for i in range(n))
    assert snapshot(tmp_path) == before

    # without its -shm the WAL cannot be read by a reader that may not create one
    (tmp_path / "outbox.sqlite3-shm").unlink()
    before = snapshot(tmp_path)
    reading = read_outbox_status(path, AGENT)
    assert reading.state is ReadState.UNREADABLE, reading
    assert reading.detail is not None
    assert "-shm" in reading.detail
    assert snapshot(tmp_path) == before
    with Outbox(path, AGENT) as box:  # and the writer still recovers every item
        assert box.stats().total_items == n

"""The outbox's store id: stable for a file, new after quarantine."""

from fleetroom_agent.outbox import Outbox


def test_store_id_is_stable_across_reopen(tmp_path):
    with Outbox(tmp_path / "o.sqlite3", "agent") as box:
        first = box.store_id
        assert first == box.store_id
        assert len(first) == 16
    with Outbox(tmp_path / "o.sqlite3", "agent") as box:
        assert box.store_id == first


def test_quarantined_store_gets_a_new_id(tmp_path):
    path = tmp_path / "o.sqlite3"
    with Outbox(path, "agent") as box:
        old = box.store_id
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    with Outbox(path, "agent") as box:
        assert box.quarantined_to is not None
        assert box.store_id != old


def test_reserve_file_and_wal_limit(tmp_path):
    """The ballast that lets acks delete on a full disk exists; the WAL is bounded
    (the full-disk behaviour itself is proven in tests/chaos/test_disk_full.py)."""
    from fleetroom_agent.outbox.store import RESERVE_BYTES, WAL_LIMIT_BYTES

    path = tmp_path / "o.sqlite3"
    with Outbox(path, "agent") as box:
        reserve = path.with_name(path.name + ".reserve")
        assert reserve.stat().st_size == RESERVE_BYTES
        (limit,) = box._conn.execute("PRAGMA journal_size_limit").fetchone()
        assert limit == WAL_LIMIT_BYTES
        reserve.unlink()
        box.put("readings", b'{"n": 1}')
        (item,) = box.next_batch()
        assert box.ack_keys([item.key]) == 1
        assert reserve.exists()  # given back after a successful delete

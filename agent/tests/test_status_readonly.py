"""``status --json`` and the status page read the data directory without writing to it.

Both used to open a full :class:`~fleetroom_agent.outbox.Outbox` per request, whose
constructor quarantines a file it believes corrupt, creates the 1 MiB reserve file
and journals the recovery.  Here the real command (a separate process) and the
real page (real sockets) run against real files, and every file of the data
directory — names, bytes, mtimes — must be the same afterwards.  Expected figures
come from what the test put into the store, not from the reader.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleetroom_agent.localui.password import set_password
from fleetroom_agent.localui.server import StatusPage
from fleetroom_agent.outbox import NewItem, Outbox

AGENT_EXE = str(Path(sys.executable).parent / "fleetroom-agent")
AGENT = "0b4f0f5e-8d0c-4c1e-9a57-2f1b7f6f0009"
PASSWORD = "status-page-password"
BASE_T = 1_700_000_000.0

#: The keys of ``fleetroom.agent-status/1`` (``outbox_error`` only when it applies).
STATUS_KEYS = {"schema", "data_dir", "running", "pid", "agent_id", "enrolled",
               "state_written_at", "started_at", "version", "last_ack_at", "last_error",
               "errors", "schedule", "transports", "transport", "devices",
               "weak_crypto_devices", "jobs", "counts", "profiles", "outbox",
               "queue_items", "queue_bytes", "oldest_unsent_at"}
OUTBOX_KEYS = {"queue_items", "queue_bytes", "oldest_unsent_at", "budget_bytes", "streams"}
STREAM_KEYS = {"items", "bytes", "last_seq", "oldest_unsent_at"}


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime (ns), by name."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.iterdir()) if p.is_file()}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def data_dir(tmp_path: Path) -> Path:
    """A data directory as ``run`` leaves it: ``state.json`` naming the agent."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_text(json.dumps({
        "agent_id": AGENT, "last_ack_at": "2025-03-10T12:00:00+00:00",
        "last_error": "delivery: connection refused", "devices": 2}))
    return data


def fill(data: Path) -> dict[str, int]:
    """12 readings of 10 bytes and 3 status items of 4 bytes; the reserve given back.

    The reserve file is removed as the outbox does on a full disk: a status
    request must not be what puts 1 MiB back onto that disk.
    """
    tick = [BASE_T]

    def clock() -> float:
        tick[0] += 1.0
        return tick[0]

    with Outbox(data / "outbox.sqlite3", AGENT, clock=clock) as box:
        box.put_many([NewItem("readings", b"0123456789") for _ in range(12)])
        box.put_many([NewItem("status", b"abcd") for _ in range(3)])
    (data / "outbox.sqlite3.reserve").unlink()
    return {"readings": 12, "status": 3}


def corrupt(data: Path) -> None:
    (data / "outbox.sqlite3").write_bytes(random.Random(7).randbytes(64 * 1024))


def cli_status(data: Path, journal: Path, *, as_json: bool = True) -> Any:
    """``fleetroom-agent status [--json]`` in its own process: the document, or the text."""
    env = {**os.environ, "FLEETROOM_AGENT_JOURNAL": str(journal), "COLUMNS": "300"}
    env.pop("FLEETROOM_AGENT_CONFIG", None)
    p = subprocess.run([AGENT_EXE, "status", *(["--json"] if as_json else []),
                        "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=60, env=env, check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) if as_json else p.stdout


def check_figures(doc: dict[str, Any]) -> None:
    assert set(doc) == STATUS_KEYS
    assert doc["agent_id"] == AGENT
    assert doc["last_error"] == "delivery: connection refused"
    assert doc["queue_items"] == 15
    assert doc["queue_bytes"] == 12 * 10 + 3 * 4
    assert doc["oldest_unsent_at"] == iso(BASE_T + 1)
    outbox = doc["outbox"]
    assert set(outbox) == OUTBOX_KEYS
    assert set(outbox["streams"]) == {"readings", "status"}
    for stream in outbox["streams"].values():
        assert set(stream) == STREAM_KEYS
    assert outbox["streams"]["readings"]["items"] == 12
    assert outbox["streams"]["readings"]["last_seq"] == 12
    assert outbox["streams"]["status"] == {"items": 3, "bytes": 12, "last_seq": 3,
                                           "oldest_unsent_at": iso(BASE_T + 13)}


# ------------------------------------------------------------------ status --json

def test_status_json_reads_the_outbox_without_creating_the_reserve_or_journal(tmp_path):
    data = data_dir(tmp_path)
    fill(data)
    journal = tmp_path / "journal.jsonl"
    before = snapshot(data)
    assert "outbox.sqlite3.reserve" not in before
    check_figures(cli_status(data, journal))
    assert snapshot(data) == before
    assert not journal.exists()


def test_status_json_on_a_corrupt_outbox_reports_it_and_changes_nothing(tmp_path):
    data = data_dir(tmp_path)
    corrupt(data)
    journal = tmp_path / "journal.jsonl"
    before = snapshot(data)
    doc = cli_status(data, journal)
    assert set(doc) == STATUS_KEYS | {"outbox_error"}
    assert doc["outbox"] is None
    assert doc["queue_items"] is None
    assert doc["outbox_error"].startswith("corrupt: ")
    human = cli_status(data, journal, as_json=False)
    assert "outbox: corrupt: outbox.sqlite3 is not an SQLite database" in human
    assert snapshot(data) == before  # not quarantined, no fresh store, no reserve
    assert not journal.exists()  # no recovery gap record journalled


def test_status_json_without_an_outbox_creates_none(tmp_path):
    data = data_dir(tmp_path)
    before = snapshot(data)
    doc = cli_status(data, tmp_path / "journal.jsonl")
    assert set(doc) == STATUS_KEYS
    assert doc["outbox"] is None
    assert doc["queue_items"] is None
    assert snapshot(data) == before
    assert sorted(p.name for p in data.iterdir()) == ["state.json"]


def test_status_json_with_a_damaged_state_file_leaves_it_in_place(tmp_path):
    data = data_dir(tmp_path)
    fill(data)
    (data / "state.json").write_text('{"agent_id": "cut off')
    before = snapshot(data)
    doc = cli_status(data, tmp_path / "journal.jsonl")
    assert doc["agent_id"] is None  # no identity either: nothing to read the outbox for
    assert snapshot(data) == before  # no state.json.bad


# ------------------------------------------------------------------ the status page

async def _get(sp: StatusPage, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sp.port}", auth=("", PASSWORD),
                                 trust_env=False, timeout=30) as c:
        return await c.get(path)


async def _serve_and_get(data: Path, paths: list[str]) -> list[httpx.Response]:
    sp = StatusPage(data, port=0)  # the default facts: the read-only status
    await sp.start()
    task = asyncio.create_task(sp.serve_forever())
    try:
        return [await _get(sp, p) for p in paths]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_status_page_reads_the_outbox_without_writing(tmp_path, monkeypatch):
    data = data_dir(tmp_path)
    fill(data)
    set_password(data, PASSWORD)
    journal = tmp_path / "journal.jsonl"  # set after fill(): only the page may not write it
    monkeypatch.setenv("FLEETROOM_AGENT_JOURNAL", str(journal))
    before = snapshot(data)
    as_json, html, again = await _serve_and_get(data, ["/status.json", "/", "/status.json"])
    assert as_json.status_code == html.status_code == again.status_code == 200
    check_figures(as_json.json())
    assert "delivery: connection refused" in html.text
    assert snapshot(data) == before
    assert not journal.exists()


async def test_status_page_on_a_corrupt_outbox_reports_it_and_changes_nothing(tmp_path,
                                                                             monkeypatch):
    journal = tmp_path / "journal.jsonl"
    monkeypatch.setenv("FLEETROOM_AGENT_JOURNAL", str(journal))
    data = data_dir(tmp_path)
    corrupt(data)
    set_password(data, PASSWORD)
    before = snapshot(data)
    r, html = await _serve_and_get(data, ["/status.json", "/"])
    assert r.status_code == html.status_code == 200
    facts = r.json()
    assert facts["outbox"] is None
    assert facts["outbox_error"].startswith("corrupt: ")
    assert "<th>Outbox problem</th><td>corrupt: outbox.sqlite3 is not an SQLite" in html.text
    assert snapshot(data) == before
    assert not journal.exists()


@pytest.mark.parametrize("host", ["localhost", "::1", "0.0.0.0"])
def test_page_and_config_share_one_bind_check(tmp_path, host):
    from fleetroom_agent.runtime.config import StatusPageConfig

    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only") as from_page:
        StatusPage(tmp_path, host=host)
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only") as from_config:
        StatusPageConfig(bind=host)
    assert str(from_page.value) in str(from_config.value)

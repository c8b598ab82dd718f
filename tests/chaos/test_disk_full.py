"""A full disk: the agent's data directory on a size-limited tmpfs in its own mount
namespace (``unshare --mount``), the server away.

1. The disk budget (``[outbox] budget_mb``) keeps the outbox below the disk's size:
   readings are dropped oldest-first with a gap record, the agent keeps running.
2. Another program then fills the disk to the last byte: the agent neither crashes
   nor corrupts its store; a put that cannot be stored is recorded in its state.
3. The server comes back while the disk is still full: the gap record, first in the
   queue, reaches the server and is normalised.
4. Space is freed: the outbox drains.

While the disk is still full, the whole queue is delivered: deleting acknowledged
items needs WAL space, and the outbox gives back its 1 MiB reserve file for that
(before the reserve, the agent resent its first batch until space was freed).

Ground truth: every item the journal says was committed is on the server or listed in
a gap record that reached the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.support.chaos_agent import AgentHost
from tests.support.chaos_server import ServerHost
from tests.support.chaos_truth import compare, read_journal

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chaos"), pytest.mark.timeout(600)]

IN_CI = os.environ.get("CI", "").lower() == "true"
TMPFS = 8 * 1024 * 1024
BUDGET_MB = 1
STALL_S = 10.0


def need_unshare(tmp_path) -> None:
    """Skip (fail in CI) unless this process may mount a tmpfs in a new namespace."""
    cmd = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        cmd[1:1] = ["--user", "--map-root-user"]
    probe = tmp_path / "probe"
    probe.mkdir()
    ok = shutil.which("unshare") is not None and subprocess.run(
        [*cmd, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
        capture_output=True, check=False).returncode == 0
    if not ok:
        if IN_CI:
            pytest.fail("unshare --mount with a tmpfs is required in CI")
        pytest.skip("cannot mount a tmpfs in a new mount namespace here")


def test_full_disk_degrades_records_the_gap_and_never_crashes(
        tmp_path, chaos_server: ServerHost, new_agent: Callable[..., AgentHost]) -> None:
    need_unshare(tmp_path)
    agent = new_agent(budget_mb=BUDGET_MB, tmpfs_bytes=TMPFS)
    chaos_server.kill()
    agent.start(max_items=200)
    assert agent.call("stats")["disk_free"] <= TMPFS

    # 1. More than the budget: 600 devices, two meter reads each (3-hourly, 6 hours).
    filled = agent.call("fill", devices=600, meter_read_s=3 * 3600, hours=6, chunk=50)
    assert filled["stored"] == filled["planned"] == 1200  # every put succeeded
    st = agent.call("stats")
    assert st["bytes"] <= BUDGET_MB * 1024 * 1024
    assert st["streams"]["gaps"]["count"] >= 1  # the drop is on record, waiting to be sent
    assert st["items"] < 1200

    # 2. Another program takes the rest of the disk.
    agent.call("ballast")
    assert agent.call("stats")["disk_free"] == 0
    more = agent.call("fill", devices=100, meter_read_s=3 * 3600, hours=3, chunk=10)
    st = agent.call("stats")
    assert agent.running()
    assert st["put_ok"] + st["put_failed"] == 1200 + more["planned"]
    if st["put_failed"]:
        assert st["counts"].get("items_not_stored") == st["put_failed"]
        assert any("could not store" in e["message"] for e in st["errors"])
    in_outbox = st["items"]

    # 3. The server is back; the disk is still full.  The gap record leads the queue
    #    (critical priority) and is delivered and normalised.
    chaos_server.start()
    deadline = time.monotonic() + 60
    while chaos_server.counts(agent.agent_id)["gaps"] == 0:
        assert time.monotonic() < deadline, "the gap record did not reach the server"
        assert agent.running()
        time.sleep(0.3)
    time.sleep(STALL_S)  # time enough to send the rest, were it not stuck (see below)
    assert agent.running()
    on_server_full = chaos_server.counts(agent.agent_id)
    stuck = agent.call("stats")

    # 4. Space again: the outbox drains.
    agent.call("unballast")
    agent.wait_drained(120)
    assert agent.stop() == 0
    chaos_server.wait_processed(agent.agent_id)
    dump = chaos_server.dump(agent.agent_id)
    verdict = compare(read_journal(agent.journal, agent.agent_id), dump)
    assert verdict.problems() == [], verdict.summary()
    reasons = {g["reason"] for g in dump["gaps"]}
    assert "disk_budget" in reasons
    dropped = sum(g["count"] for g in dump["gaps"] if g["stream"] == "readings")
    readings_journalled = sum(1 for k in read_journal(agent.journal, agent.agent_id).entries
                              if k[1] == "readings")
    readings_on_server = sum(1 for i in dump["items"] if i["stream"] == "readings")
    assert readings_on_server + dropped == readings_journalled
    print(f"full disk: {filled['planned'] + more['planned']} readings offered, "
          f"{st['put_failed']} not storable on the full disk, {dropped} dropped by the "
          f"budget with {len(dump['gaps'])} gap record(s) delivered; {verdict.summary()}")
    # While the disk was still full, everything queued reached the server: deleting
    # acknowledged items needs WAL space, which the outbox's reserve file provides.
    assert on_server_full["items"] == in_outbox, (
        f"delivery stalled on a full disk: {on_server_full['items']} of {in_outbox} items "
        f"in {on_server_full['batches']} batches; {stuck['items']} left after their ack")

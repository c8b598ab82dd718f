"""``fleetroom-agent run`` in one process, ``status --json`` and the status page from outside.

Real processes, a real snmpsim printer, a real outbox; the server is simply not there
(its port is closed), so the readings queue up and the delivery error shows.  Expected
queue figures are read from the outbox file with plain sqlite3, not through the agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fleetroom_agent.identity import AgentIdentity
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tests.support import badagent
from tests.support.processes import stop_process

pytestmark = [pytest.mark.snmpsim, pytest.mark.timeout(240)]

AGENT_EXE = str(Path(sys.executable).parent / "fleetroom-agent")
AGENT_ID = "0b4f0f5e-8d0c-4c1e-9a57-2f1b7f6f0003"
PASSWORD = "local-page-password"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT_EXE, *args], capture_output=True, text=True, timeout=60,
                          input=stdin, check=False)


def status(data: Path) -> dict[str, Any]:
    p = cli("status", "--json", "--data-dir", str(data))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def outbox_truth(data: Path) -> tuple[int, float | None]:
    """(items, oldest created_at) straight from the SQLite file."""
    con = sqlite3.connect(f"file:{data / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        n, oldest = con.execute("SELECT count(*), min(created_at) FROM items").fetchone()
    finally:
        con.close()
    return int(n), oldest


@pytest.fixture
def setup(tmp_path):
    src = tmp_path / "recordings"
    src.mkdir()
    shutil.copyfile(SYNTHETIC / "demo-ricoh-imc3000.snmprec", src / "public.snmprec")
    data = tmp_path / "agent-data"
    closed = badagent.closed_udp_port()  # any closed port number will do for TCP too
    AgentIdentity(agent_id=AGENT_ID, server_url=f"http://127.0.0.1:{closed}",
                  signing_key=SigningKey.generate(), encryption_key=PrivateKey.generate(),
                  server_verify_key=SigningKey.generate().verify_key,
                  server_public_key=PrivateKey.generate().public_key,
                  tenant="demo").save(data)
    with SnmpSimulator([src]) as sim:
        page_port = free_tcp_port()
        config = tmp_path / "agent.toml"
        config.write_text(f"""
data_dir = "{data}"

[scan]
targets = ["{sim.endpoint}"]

[schedule]
max_status_poll_s = 10

[transports]
order = ["https"]

[status_page]
port = {page_port}

[[credentials]]
name = "public"
community = "public"
""")
        config.chmod(0o600)
        yield sim, data, config, page_port


def test_status_json_and_page_from_other_processes_while_run_is_active(setup, tmp_path):
    sim, data, config, page_port = setup
    p = cli("set-password", "--data-dir", str(data), "--password-stdin", stdin=PASSWORD + "\n")
    assert p.returncode == 0, p.stderr
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen([AGENT_EXE, "run", "--config", str(config)], stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = status(data)
            if (doc["running"] and (doc["queue_items"] or 0) >= 1 and doc["devices"] == 1
                    and any(e["where"] == "delivery" for e in doc["errors"])):
                break
            time.sleep(1)
        else:
            pytest.fail(f"agent did not get going: {doc}\n{(tmp_path / 'agent.log').read_text()}")

        assert doc["agent_id"] == AGENT_ID
        assert doc["pid"] == agent.pid
        n, oldest = outbox_truth(data)
        assert doc["queue_items"] == n
        assert doc["oldest_unsent_at"] == datetime.fromtimestamp(oldest, UTC).isoformat(
            timespec="seconds")
        assert doc["outbox"]["streams"]["readings"]["items"] == n
        assert doc["last_ack_at"] is None  # the server was never reached
        assert any(e["where"] == "delivery" and "refused" in e["message"]
                   for e in doc["errors"])
        assert [t["name"] for t in doc["transports"]] == ["https"]
        assert doc["transports"][0]["failures"] >= 1
        assert doc["schedule"]["effective_status_poll_s"] == 10
        assert doc["weak_crypto_devices"] == [sim.endpoint]  # v2c community
        human = cli("status", "--data-dir", str(data))
        assert AGENT_ID in human.stdout
        assert "running" in human.stdout

        # the status page of the running process: same facts, password, loopback only
        url = f"http://127.0.0.1:{page_port}/status.json"
        assert httpx.get(url, trust_env=False).status_code == 401
        page = httpx.get(url, auth=("", PASSWORD), trust_env=False)
        assert page.status_code == 200
        facts = page.json()
        assert facts["agent_id"] == AGENT_ID
        assert facts["queue_items"] == outbox_truth(data)[0]
        listening = [c for c in psutil.Process(agent.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}

        # a second agent on the same data directory refuses to start
        second = subprocess.run([AGENT_EXE, "run", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 3
        assert str(agent.pid) in second.stderr
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        try:
            code = agent.wait(30)
        finally:
            stop_process(agent)
            log.close()
    assert code == 0, (tmp_path / "agent.log").read_text()
    after = status(data)
    assert after["running"] is False
    assert after["queue_items"] == outbox_truth(data)[0] >= 1  # nothing lost at shutdown


def test_run_refuses_without_identity_or_with_a_bad_config(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('[scan]\ntargets = ["127.0.0.1"]\n[[credentials]]\nname = "p"\n')
    p = cli("run", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert p.returncode == 2
    assert "enroll" in p.stderr
    config.write_text('[scan]\ntargets = ["127.0.0.1"]\ntypo = 1\n[[credentials]]\nname = "p"\n')
    p = cli("run", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert p.returncode == 2
    assert "unknown key 'scan.typo'" in p.stderr
    p = cli("status", "--json", "--data-dir", str(tmp_path / "missing"))
    assert p.returncode == 2
    env_less = cli("status", "--json")
    if "FLEETROOM_AGENT_DATA_DIR" not in os.environ:
        assert env_less.returncode == 2

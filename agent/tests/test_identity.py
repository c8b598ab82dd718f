"""The agent identity file (mode 0600, atomic, refused when exposed) and the counter store
(never repeats, kill -9 included)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fleetroom_agent.identity import (
    COUNTER_FILENAME,
    IDENTITY_FILENAME,
    AgentIdentity,
    CounterStore,
    IdentityError,
)
from fleetroom_protocol.messages import MqttSettings, Schedule
from nacl.public import PrivateKey
from nacl.signing import SigningKey

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def _identity() -> AgentIdentity:
    return AgentIdentity(
        agent_id="6f1c1f7e-1d7b-4e47-9a57-0c3c3c1e9d10", server_url="https://fr.example",
        signing_key=SigningKey.generate(), encryption_key=PrivateKey.generate(),
        server_verify_key=SigningKey.generate().verify_key,
        server_public_key=PrivateKey.generate().public_key, tenant="acme", site="hq",
        schedule=Schedule(version=3, status_poll_s=120),
        mqtt=MqttSettings(url="mqtts://broker:8883", username="u", password="p",
                          topic_up="up", topic_down="down"),
        mail_to="intake@fr.example", pins=("sha256:" + "A" * 43 + "=",))


def test_save_is_0600_and_load_round_trips(tmp_path):
    ident = _identity()
    saved = ident.save(tmp_path / "data")
    path = tmp_path / "data" / IDENTITY_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) & 0o077 == 0
    assert saved.data_dir == tmp_path / "data"
    loaded = AgentIdentity.load(tmp_path / "data")
    assert loaded == ident
    assert bytes(loaded.signing_key) == bytes(ident.signing_key)
    assert bytes(loaded.encryption_key) == bytes(ident.encryption_key)
    assert bytes(loaded.server_verify_key) == bytes(ident.server_verify_key)
    assert loaded.schedule.status_poll_s == 120
    assert loaded.mqtt is not None
    assert loaded.mqtt.password == "p"
    assert [p.name for p in (tmp_path / "data").iterdir()] == [IDENTITY_FILENAME]  # no temp


def test_save_is_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        _identity().save(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / IDENTITY_FILENAME).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_an_exposed_key_file_is_refused(tmp_path, mode):
    _identity().save(tmp_path)
    path = tmp_path / IDENTITY_FILENAME
    path.chmod(mode)
    with pytest.raises(IdentityError) as info:
        AgentIdentity.load(tmp_path)
    assert f"{mode:04o}" in str(info.value)
    assert f"chmod 600 {path}" in str(info.value)


def test_replacing_keeps_0600_and_the_old_file_is_never_half_written(tmp_path):
    first, second = _identity(), _identity()
    first.save(tmp_path)
    second.save(tmp_path)
    assert AgentIdentity.load(tmp_path) == second
    assert stat.S_IMODE((tmp_path / IDENTITY_FILENAME).stat().st_mode) == 0o600


def test_missing_and_invalid_files_give_clear_errors(tmp_path):
    with pytest.raises(IdentityError, match="enroll first"):
        AgentIdentity.load(tmp_path)
    path = tmp_path / IDENTITY_FILENAME
    path.write_text('{"agent_id": "x"}')
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not a valid identity file") as info:
        AgentIdentity.load(tmp_path)
    assert "signing_key" in str(info.value)
    good = _identity().to_json().replace(b'"tenant": "acme"', b'"tenant": "acme", "x": 1')
    path.write_bytes(good)
    with pytest.raises(IdentityError, match=r"problem in: x"):
        AgentIdentity.load(tmp_path)


def test_counter_is_strictly_increasing_and_continues_above_the_mark(tmp_path):
    c = CounterStore(tmp_path, block=10)
    first = [c.next() for _ in range(25)]
    assert first == list(range(25))
    assert c.peek_mark() == 30  # three blocks reserved before use
    assert stat.S_IMODE((tmp_path / COUNTER_FILENAME).stat().st_mode) == 0o600
    again = CounterStore(tmp_path, block=10)  # a restart (the tail of the block is skipped)
    assert [again.next() for _ in range(3)] == [30, 31, 32]


def test_two_stores_on_one_directory_never_share_a_value(tmp_path):
    stores = [CounterStore(tmp_path, block=7) for _ in range(2)]
    seen: list[int] = []
    lock = threading.Lock()

    def draw(store):
        for _ in range(200):
            v = store.next()
            with lock:
                seen.append(v)

    threads = [threading.Thread(target=draw, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 800
    assert len(set(seen)) == 800


def test_a_damaged_counter_file_is_not_silently_reset(tmp_path):
    (tmp_path / COUNTER_FILENAME).write_text("garbage")
    with pytest.raises(IdentityError, match="not reset automatically"):
        CounterStore(tmp_path).next()


_DRAWER = textwrap.dedent("""
    import sys
    from fleetroom_agent.identity import CounterStore
    c = CounterStore(sys.argv[1], block=int(sys.argv[2]))
    out = sys.stdout
    while True:
        out.write(f"{c.next()}\\n")
        out.flush()
""")


def _run_and_kill(data_dir: Path, block: int, at_least: int) -> list[int]:
    """Start a process drawing counters as fast as it can, kill -9 it, return what it used."""
    proc = subprocess.Popen([sys.executable, "-c", _DRAWER, str(data_dir), str(block)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    got: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < at_least and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        got.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # whatever it printed before dying was "used" too
    got += [int(x) for x in proc.stdout.read().split()]
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return got


def test_counter_never_repeats_across_kill_9(tmp_path):
    used: list[int] = []
    for cycle in range(6):
        values = _run_and_kill(tmp_path, block=50, at_least=30 + 37 * cycle)
        assert values, "the drawing process printed nothing"
        assert values == sorted(values)
        if used:
            assert min(values) > max(used)  # continues above everything used before
        used += values
    assert len(used) == len(set(used))
    assert CounterStore(tmp_path).peek_mark() > max(used)

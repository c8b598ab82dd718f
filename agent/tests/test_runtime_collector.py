"""The running agent against a simulated printer (snmpsim): a critical alert that appears on
the device reaches the outbox with CRITICAL priority within seconds, and nothing — a broken
profile, a silent device, a device answering garbage — stops the agent.

The simulated printer changes state at runtime: snmpsim re-reads a recording whose
modification time changed, so the test swaps the served file from the ``alerts-warning``
recording (two toner warnings) to ``alerts`` (a critical jam) while the agent runs.
Expected values come from the recordings themselves (``tests/support/recordings``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fleetroom_agent.outbox import Priority
from fleetroom_agent.runtime.app import Runtime, RuntimeParts
from fleetroom_agent.runtime.config import parse_config
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC
from fleetroom_protocol import Reading

from tests.support import badagent
from tests.support import recordings as rec

pytestmark = [pytest.mark.snmpsim, pytest.mark.timeout(180)]

AGENT = "0b4f0f5e-8d0c-4c1e-9a57-2f1b7f6f0002"
STATUS_POLL_S = 10
JITTER = 0.1
PRT_ALERT = "1.3.6.1.2.1.43.18.1.1"
SERIAL = "1.3.6.1.2.1.43.5.1.1.17.1"


class StandInSender:
    """Counts wake-ups and when they happened; delivers nothing (no server here)."""

    def __init__(self) -> None:
        self.wakes: list[float] = []

    async def run(self) -> None:
        await asyncio.Event().wait()

    def wake(self) -> None:
        self.wakes.append(time.monotonic())

    def status(self) -> dict[str, Any]:
        return {"transports": {}}

    async def aclose(self) -> None:
        pass


def served_file(sim: SnmpSimulator, stem: str) -> Path:
    """Where the running simulator reads ``stem`` from.  (fleetsim stages recordings in
    a private work directory; a public "replace this recording" helper would be nicer.)"""
    assert sim._workdir is not None
    return sim._workdir / "data0" / f"{stem}.snmprec"


def swap_recording(sim: SnmpSimulator, stem: str, source: Path) -> None:
    """Atomically serve ``source``'s content under ``stem`` (new mtime: snmpsim re-indexes)."""
    target = served_file(sim, stem)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.chmod(0o644)
    later = target.stat().st_mtime + 5
    os.utime(tmp, (later, later))
    os.replace(tmp, target)


def make_runtime(data_dir: Path, targets: list[str], community: str,
                 extra: str = "") -> tuple[Runtime, StandInSender]:
    config = f"""
[scan]
targets = {targets!r}
timeout_s = 0.5
retries = 1

[schedule]
max_status_poll_s = {STATUS_POLL_S}

[status_page]
enabled = false

[[credentials]]
name = "sim"
community = "{community}"
{extra}
"""
    sender = StandInSender()
    rt = Runtime(parse_config(config, data_dir / "agent.toml"), data_dir, AGENT,
                 RuntimeParts(sender_factory=lambda *_: sender))
    rt.schedule.schedule = rt.schedule.schedule.model_copy(update={"jitter": JITTER})
    return rt, sender


def items(rt: Runtime, stream: str) -> list[Any]:
    return [i for i in rt.outbox.next_batch(1000, 50_000_000) if i.stream == stream]


async def wait_for(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic()


@pytest.fixture
def alert_sim(tmp_path):
    src = tmp_path / "recordings"
    src.mkdir()
    shutil.copyfile(SYNTHETIC / "alerts-warning.snmprec", src / "dev.snmprec")
    with SnmpSimulator([src]) as sim:
        yield sim


async def test_critical_alert_reaches_the_outbox_within_seconds(tmp_path, alert_sim):
    data = tmp_path / "agent"
    data.mkdir()
    rt, sender = make_runtime(data, [alert_sim.endpoint], "dev")
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    try:
        # 1. startup scan reads the device (warnings only: a plain reading) and the
        #    first status poll takes its baseline.
        key = alert_sim.endpoint
        await wait_for(lambda: key in rt.registry.devices
                       and rt.registry.devices[key].fingerprint is not None,
                       STATUS_POLL_S * 3 + 10, "discovery and the first status poll")
        warning = rec.load(SYNTHETIC / "alerts-warning.snmprec")
        readings = [Reading.model_validate_json(i.payload) for i in items(rt, "readings")]
        assert [r.identity.serial for r in readings] == [rec.text(warning, SERIAL)]
        assert items(rt, "alerts") == []
        assert rt.registry.devices[key].critical == []
        # the startup scan's readings go out at once (the sender was woken), not at
        # the next command poll minutes later
        assert sender.wakes

        # 2. the printer jams
        wakes_before = len(sender.wakes)
        swap_recording(alert_sim, "dev", SYNTHETIC / "alerts.snmprec")
        t0 = time.monotonic()
        t1 = await wait_for(lambda: bool(items(rt, "alerts")), STATUS_POLL_S * 3,
                            "the alert in the outbox")
        latency = t1 - t0
        print(f"critical alert latency: {latency:.1f} s")
        assert latency <= STATUS_POLL_S * (1 + JITTER) + 5, latency

        (item,) = items(rt, "alerts")
        assert item.priority == Priority.CRITICAL
        reading = Reading.model_validate_json(item.payload)
        jammed = rec.load(SYNTHETIC / "alerts.snmprec")
        assert reading.identity.serial == rec.text(jammed, SERIAL)
        critical_rows = {idx for idx, (_, v) in rec.column(jammed, f"{PRT_ALERT}.2.1").items()
                         if v == "3"}
        assert critical_rows == {"12"}
        got = {a.index: a for a in reading.alerts if a.source == "prtAlertTable"}
        assert got[12].severity == "critical"
        assert got[12].description == rec.text(jammed, f"{PRT_ALERT}.8.1.12")
        # the sender was woken right after the alert was stored (the item is visible
        # in the outbox a moment before the collector's coroutine resumes to wake it)
        await wait_for(lambda: len(sender.wakes) > wakes_before, 2, "the sender woken")
        assert sender.wakes[-1] >= t0
        assert rt.registry.devices[key].critical  # remembered: not reported again

        # 3. the next poll sees the same alert: no second critical item
        await asyncio.sleep(STATUS_POLL_S * (1 + JITTER) + 2)
        assert len(items(rt, "alerts")) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    state = (data / "state.json").read_text()
    assert AGENT in state


async def test_broken_profile_silent_and_garbage_devices_do_not_stop_the_agent(tmp_path):
    src = tmp_path / "recordings"
    src.mkdir()
    shutil.copyfile(SYNTHETIC / "demo-kyocera-m3145.snmprec", src / "public.snmprec")
    broken = tmp_path / "profiles"
    broken.mkdir()
    (broken / "broken.yaml").write_text("name: broken\nextends: [no-such-profile]\nmatch: [\n")
    data = tmp_path / "agent"
    data.mkdir()
    silent = badagent.silent_udp_socket()
    garbage = badagent.BadAgent({badagent.oid("1.3.6.1.2.1.1.1.0"): b"x"},
                                faults=badagent.Misbehaviour(garbage=True))
    try:
        with SnmpSimulator([src]) as sim:
            async with garbage:
                silent_ep = f"127.0.0.1:{silent.getsockname()[1]}"
                garbage_ep = f"127.0.0.1:{garbage.port}"
                rt, _ = make_runtime(data, [sim.endpoint, silent_ep, garbage_ep], "public",
                                     f'\n[profiles]\ndirs = ["{broken}"]\n')
                assert any("broken.yaml" in e.message for e in rt.state.errors)
                stop = asyncio.Event()
                task = asyncio.create_task(rt.run(stop))
                try:
                    await wait_for(lambda: rt.state.jobs.get("rediscovery") is not None
                                   and rt.state.jobs["rediscovery"].finished_at is not None,
                                   60, "the startup scan")
                    kyocera = rec.load(SYNTHETIC / "demo-kyocera-m3145.snmprec")
                    readings = [Reading.model_validate_json(i.payload)
                                for i in items(rt, "readings")]
                    assert [r.identity.serial for r in readings] == [rec.text(kyocera, SERIAL)]
                    assert set(rt.registry.devices) == {sim.endpoint}
                    assert garbage.seen  # it was asked, and answered garbage
                    assert not task.done()
                    # the printer goes silent: the status poll records it, nothing crashes
                    rt.registry.devices[sim.endpoint].fingerprint = None
                    sim.stop()
                    await rt.status_poll()
                    job = rt.state.jobs["status-poll"]
                    assert job.outcome == "done"
                    assert "1 failed" in job.detail
                    assert rt.registry.devices[sim.endpoint].failures == 1
                    assert not task.done()
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 30)
    finally:
        silent.close()

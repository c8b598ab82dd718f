"""The agent the chaos tests and the transport benchmark start, kill -9 and start again.

``python -m tests.support.chaos_agent --config agent.toml --data-dir DIR`` assembles the
production runtime exactly as ``fleetroom-agent run`` does (:func:`run_agent`: the
identity from the data directory, the run lock, the counter store, the transports from
``[transports] order``, :class:`~fleetroom_agent.runtime.app.Runtime` with its
scheduler, command worker, sender and state loop) and adds two things a test needs:

* **a producer** that puts readings through the runtime's own collector API
  (:meth:`Collector.put_items`, the call every SNMP read ends in — with its handling of
  a full disk) and wakes the sender, because a simulated fleet read by SNMP makes a
  few readings a minute, not the hundreds a kill cycle needs;
* **the sender's back-off** shortened (``--backoff-cap``) and batches made small
  (``--max-items``), so a cycle takes a second instead of minutes.  Neither is in
  ``agent.toml``; both are constructor arguments of :class:`Sender`.

Every item the outbox commits is journalled (``$FLEETROOM_AGENT_JOURNAL``), which is
the ground truth the tests compare with the server.

Control: JSON lines on stdin (``produce``, ``pause``, ``fill``, ``ballast``,
``unballast``, ``stats``), events and answers as JSON lines on stdout; the log goes to
stderr.  :class:`AgentHost` is the test side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
EXE: Final = Path(sys.executable).parent

AGENT_TOML: Final = """\
log_level = "{log_level}"

[outbox]
budget_mb = {budget_mb}

[transports]
order = ["https"]

[status_page]
enabled = false

[[credentials]]
name = "public"
version = "2c"
community = "public"
"""


# --- the driver (runs in its own process) -----------------------------------------------


class Driver:
    """The runtime plus the producer and the control loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.runtime: Any = None
        self.tag: str = args.tag
        self.devices: int = args.devices
        self.per_put: int = args.per_put
        self.interval: float = args.interval
        self.producing = asyncio.Event()
        if args.produce:
            self.producing.set()
        self.step = 0
        self.put_ok = 0
        self.put_failed = 0
        self._last_ms = 0
        self.epoch = datetime.now(UTC) - timedelta(days=2)
        self.ballast: Path | None = None

    @staticmethod
    def emit(doc: dict[str, Any]) -> None:
        """One event or answer on stdout."""
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
        sys.stdout.flush()

    def _unique_ms(self) -> int:
        """Milliseconds since the run's epoch, strictly increasing across restarts (a
        restart takes longer than a millisecond), so (serial, taken_at) never repeats."""
        now = int((datetime.now(UTC) - self.epoch).total_seconds() * 1000)
        self._last_ms = max(self._last_ms + 1, now)
        return self._last_ms

    async def _put(self, batch: list[Any]) -> bool:
        ok: bool = await self.runtime.collector.put_items(batch)
        if ok:
            self.put_ok += len(batch)
        else:
            self.put_failed += len(batch)
        return ok

    def _item(self, device: int, taken_at: datetime, step: int, *, alert: bool) -> Any:
        from fleetroom_agent.outbox import NewItem, Priority
        from fleetroom_protocol.messages import STREAM_ALERTS, STREAM_READINGS

        from tests.support.chaos_readings import device_key, make_reading, reading_payload

        reading = make_reading(self.tag, device, taken_at, step)
        if alert:
            return NewItem(STREAM_ALERTS, reading_payload(reading), Priority.CRITICAL)
        return NewItem(STREAM_READINGS, reading_payload(reading), Priority.NORMAL,
                       device_key(reading))

    async def produce(self) -> None:
        """While producing: ``per_put`` readings every ``interval`` s, every tenth put
        an alert (critical, another stream); wake the sender after each put."""
        puts = 0
        while True:
            await self.producing.wait()
            batch = []
            for _ in range(self.per_put):
                ms = self._unique_ms()
                self.step += 1
                batch.append(self._item(ms % self.devices,
                                        self.epoch + timedelta(milliseconds=ms), self.step,
                                        alert=puts % 10 == 9))
            puts += 1
            await self._put(batch)
            self.runtime.wake()
            await asyncio.sleep(self.interval)

    async def fill(self, devices: int, meter_read_s: int, hours: float,
                   chunk: int) -> dict[str, Any]:
        """Put the meter reads a ``devices`` site makes in ``hours`` while the server is
        away (the volume :func:`outage_plan` computes), ``chunk`` per transaction."""
        from fleetroom_protocol.messages import Schedule

        from tests.support.chaos_readings import outage_plan

        plan = outage_plan(devices, Schedule(meter_read_s=meter_read_s), hours=hours)
        t0 = time.monotonic()
        stored = 0
        for start in range(0, len(plan), chunk):
            part = [self._item(d, at, step, alert=False)
                    for d, at, step in plan[start:start + chunk]]
            if await self._put(part):
                stored += len(part)
        return {"planned": len(plan), "stored": stored,
                "seconds": round(time.monotonic() - t0, 3)}

    def _fill_ballast(self) -> int:
        """Another program fills the disk: write zeros next to the outbox until ENOSPC."""
        assert self.ballast is None
        self.ballast = Path(self.args.data_dir) / "ballast.bin"
        written = 0
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 65536, 4096, 512):
                block = b"\0" * size
                with contextlib.suppress(OSError):
                    while True:
                        written += os.write(fd, block)
        finally:
            os.close(fd)
        return written

    def stats(self) -> dict[str, Any]:
        """Outbox, runtime and process figures."""
        st = self.runtime.outbox.stats()
        vfs = os.statvfs(self.args.data_dir)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        files = {p.name: p.stat().st_size for p in Path(self.args.data_dir).iterdir()
                 if p.name.startswith("outbox")}
        return {
            "items": st.total_items, "bytes": st.total_bytes,
            "streams": {k: {"count": v.count, "last_seq": v.last_seq}
                        for k, v in st.streams.items()},
            "quarantined_to": str(st.quarantined_to) if st.quarantined_to else None,
            "put_ok": self.put_ok, "put_failed": self.put_failed,
            "counts": dict(self.runtime.state.counts),
            "errors": [vars(e) for e in self.runtime.state.errors],
            "sender": self.runtime.sender_status(),
            "disk_free": vfs.f_bavail * vfs.f_frsize, "files": files,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }

    async def control(self) -> None:
        """Commands from stdin (read by a thread; asyncio has no portable stdin reader)."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def reader() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)

        threading.Thread(target=reader, daemon=True).start()
        while True:
            msg = json.loads(await lines.get())
            cmd = msg.get("cmd")
            try:
                if cmd == "produce":
                    self.per_put = int(msg.get("per_put", self.per_put))
                    self.interval = float(msg.get("interval", self.interval))
                    self.producing.set()
                    answer: dict[str, Any] = {}
                elif cmd == "pause":
                    self.producing.clear()
                    answer = {}
                elif cmd == "fill":
                    answer = await self.fill(int(msg["devices"]), int(msg["meter_read_s"]),
                                             float(msg.get("hours", 72)),
                                             int(msg.get("chunk", 50)))
                elif cmd == "ballast":
                    answer = {"written": await asyncio.to_thread(self._fill_ballast)}
                elif cmd == "unballast":
                    if self.ballast is not None:
                        self.ballast.unlink()
                        self.ballast = None
                    answer = {}
                elif cmd == "stats":
                    answer = await asyncio.to_thread(self.stats)
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                self.emit({"event": "answer", "cmd": cmd, "ok": True, **answer})
            except Exception as exc:
                self.emit({"event": "answer", "cmd": cmd, "ok": False,
                           "error": f"{type(exc).__name__}: {exc}"})

    async def main(self) -> int:
        """:func:`fleetroom_agent.runtime.app.run_agent`, plus producer and control."""
        from fleetroom_agent.backoff import Backoff
        from fleetroom_agent.identity import AgentIdentity, CounterStore
        from fleetroom_agent.runtime.app import (
            Runtime,
            RuntimeParts,
            _install_signals,
            build_transports,
            setup_logging,
        )
        from fleetroom_agent.runtime.config import load_config
        from fleetroom_agent.runtime.lock import RunLock
        from fleetroom_agent.sender import Sender

        config = load_config(Path(self.args.config))
        data_dir = Path(self.args.data_dir)
        setup_logging(config.file.log_level)
        identity = AgentIdentity.load(data_dir)
        lock = RunLock(data_dir)
        lock.acquire()
        try:
            counter = CounterStore(data_dir)
            transports, _ = build_transports(config, identity)
            backoff = Backoff(base_s=min(0.2, self.args.backoff_cap), cap_s=self.args.backoff_cap)

            def make_sender(outbox: Any, state: Any, on_reply: Any) -> Sender:
                return Sender(identity, outbox, transports, state, on_reply, counter=counter,
                              max_items=self.args.max_items, backoff=backoff)

            self.runtime = Runtime(config, data_dir, identity.agent_id,
                                   RuntimeParts(make_sender, identity=identity,
                                                counter=counter))
            stop = asyncio.Event()
            _install_signals(stop)
            st = self.runtime.outbox.stats()
            self.emit({"event": "running", "pid": os.getpid(), "agent": identity.agent_id,
                       "store": self.runtime.outbox.store_id, "items": st.total_items,
                       "quarantined_to": str(st.quarantined_to) if st.quarantined_to
                       else None})
            tasks = [asyncio.create_task(self.produce()), asyncio.create_task(self.control())]
            try:
                await self.runtime.run(stop)
            finally:
                for t in tasks:
                    t.cancel()
            return 0
        finally:
            lock.release()


def driver_parser() -> argparse.ArgumentParser:
    """Command line of the driver."""
    ap = argparse.ArgumentParser(prog="python -m tests.support.chaos_agent")
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tag", required=True, help="serial prefix of the simulated devices")
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--per-put", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--produce", action="store_true", help="start producing at once")
    ap.add_argument("--max-items", type=int, default=500)
    ap.add_argument("--backoff-cap", type=float, default=300.0)
    return ap


def driver_main(argv: Sequence[str] | None = None) -> int:
    """Run one agent (the driver) until SIGTERM."""
    return asyncio.run(Driver(driver_parser().parse_args(argv)).main())


# --- the agent zygote (runs in its own process) -----------------------------------------


def _warm_up() -> None:
    """Import what an agent start imports (the runtime, pysnmp, httpx/h2, pydantic
    models, the profiles package), so a forked agent starts in a fraction of a second."""
    import fleetroom_agent.runtime.app
    import fleetroom_agent.sender
    import fleetroom_agent.transports.https
    import fleetroom_profiles
    import h2.connection
    import httpx
    from fleetroom_agent.scan import default_client

    import tests.support.chaos_readings  # noqa: F401

    del fleetroom_agent, fleetroom_profiles, httpx, h2, default_client


def zygote_main(control_fd: int) -> int:
    """Fork agents on request: each message on the control socket carries the driver's
    argv and environment, plus three descriptors (stdin, stdout, stderr) to give it.

    Why: importing the agent costs 1–3 s of CPU per start on a loaded two-core machine,
    and the kill tests start it thirty times.  The forked child is a new process that
    builds its whole runtime (identity, lock, counter, outbox, sender) from the data
    directory, exactly like a fresh ``fleetroom-agent run`` — only the imports are shared.
    """
    import ctypes
    import socket

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    _warm_up()
    sock = socket.socket(fileno=control_fd)
    children: set[int] = set()
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
        if not data:
            break
        msg = json.loads(data)
        if msg["cmd"] == "spawn":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    sock.close()
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                        os.close(fd)
                    sys.stdin = os.fdopen(0, "r")
                    sys.stdout = os.fdopen(1, "w", buffering=1)
                    sys.stderr = os.fdopen(2, "w", buffering=1)
                    with contextlib.suppress(OSError, AttributeError):
                        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
                    os.environ.update(msg["env"])
                    code = driver_main(msg["argv"])
                except BaseException as exc:
                    with contextlib.suppress(Exception):
                        print(f"agent ended: {exc!r}", file=sys.stderr, flush=True)
                finally:
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            sock.sendall(json.dumps({"pid": pid}).encode())
        elif msg["cmd"] == "wait":
            pid, deadline = int(msg["pid"]), time.monotonic() + float(msg["timeout"])
            status: int | None = None
            while True:
                try:
                    done, raw = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # reaped before: its code is gone
                    done, raw, status = pid, 0, -1
                if done:
                    status = os.waitstatus_to_exitcode(raw) if status is None else status
                    children.discard(pid)
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            sock.sendall(json.dumps({"pid": pid, "code": status}).encode())
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return 0


# --- the test side ----------------------------------------------------------------------


class AgentError(RuntimeError):
    """The driver did not start, answered an error, or died."""


class AgentZygote:
    """The test's handle on :func:`zygote_main` (one per test session)."""

    def __init__(self, log: Path) -> None:
        import socket

        self._sock, theirs = socket.socketpair()
        with log.open("a") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.chaos_agent", "--zygote",
                 str(theirs.fileno())], cwd=REPO, pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=fh)
        theirs.close()
        self._lock = threading.Lock()

    def _ask(self, msg: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        import socket

        with self._lock:
            socket.send_fds(self._sock, [json.dumps(msg).encode()], list(fds))
            doc: dict[str, Any] = json.loads(self._sock.recv(65536))
            return doc

    def spawn(self, argv: list[str], env: dict[str, str], log: Path) -> AgentProcess:
        """A forked driver with pipes for stdin/stdout and ``log`` as stderr."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            pid = int(self._ask({"cmd": "spawn", "argv": argv, "env": env},
                                [in_r, out_w, err])["pid"])
        finally:
            for fd in (in_r, out_w, err):
                os.close(fd)
        return AgentProcess(pid, os.fdopen(in_w, "w"), os.fdopen(out_r, "r"),
                            lambda timeout: self.wait(pid, timeout))

    def wait(self, pid: int, timeout: float) -> int | None:
        """The exit code of ``pid`` (reaped by the zygote), or ``None`` if still alive."""
        code = self._ask({"cmd": "wait", "pid": pid, "timeout": timeout})["code"]
        return None if code is None else int(code)

    def close(self) -> None:
        """End the zygote (it SIGTERMs agents it still has)."""
        with contextlib.suppress(OSError):
            self._sock.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class AgentProcess:
    """A running driver, however it was started (fork from the zygote or ``Popen``)."""

    pid: int
    stdin: IO[str]
    stdout: IO[str]
    _wait: Any
    code: int | None = None

    def wait(self, timeout: float) -> int | None:
        """Exit code, or ``None`` while it runs after ``timeout`` seconds."""
        if self.code is None:
            self.code = self._wait(timeout)
        return self.code

    def poll(self) -> int | None:
        """Exit code if it has ended."""
        return self.wait(0)


def _die_with_parent() -> None:
    """``preexec_fn``: SIGTERM the agent when the test process that started it dies."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _popen(argv: list[str], env: dict[str, str], log: Path) -> AgentProcess:
    with log.open("a") as fh:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=fh, text=True,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509
    assert proc.stdin is not None
    assert proc.stdout is not None

    def wait(timeout: float) -> int | None:
        try:
            return proc.wait(timeout) if timeout > 0 else proc.poll()
        except subprocess.TimeoutExpired:
            return None

    return AgentProcess(proc.pid, proc.stdin, proc.stdout, wait)


@dataclass
class AgentHost:
    """One enrolled agent: its data directory, config, journal and (while it runs) the
    driver process."""

    root: Path
    tag: str
    budget_mb: float = 256.0
    log_level: str = "warning"
    tmpfs_bytes: int | None = None
    """Run the driver in its own mount namespace with the data directory on a tmpfs of
    this size (``unshare --mount``; the disk-full test)."""
    zygote: AgentZygote | None = None
    """Fork starts from this zygote (not with a tmpfs, which needs ``unshare``)."""
    proc: AgentProcess | None = None
    agent_id: str = ""
    _events: queue.Queue[str] = field(default_factory=queue.Queue)
    kills: int = 0
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        """The agent's data directory."""
        return self.root / f"agent-{self.tag}"

    @property
    def config(self) -> Path:
        """``agent.toml`` (outside the data directory, so a tmpfs does not hide it)."""
        return self.root / f"agent-{self.tag}.toml"

    @property
    def journal(self) -> Path:
        """The outbox journal: outside the data directory (it must survive a tmpfs)."""
        return self.root / f"journal-{self.tag}.jsonl"

    @property
    def log(self) -> Path:
        """The driver's stderr (the agent's log), across all its runs."""
        return self.root / f"agent-{self.tag}.log"

    def enroll(self, server_url: str, token: str, ca_file: Path) -> str:
        """``fleetroom-agent enroll`` (the real command) and the config file."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}
        env["FLEETROOM_ENROLL_TOKEN"] = token
        p = subprocess.run([EXE / "fleetroom-agent", "enroll", "--server", server_url,
                            "--data-dir", str(self.data_dir), "--ca-file", str(ca_file)],
                           env=env, capture_output=True, text=True, timeout=120, check=False)
        if p.returncode != 0:
            raise AgentError(f"enroll failed ({p.returncode}): {p.stderr[-2000:]}")
        self.config.write_text(AGENT_TOML.format(log_level=self.log_level,
                                                 budget_mb=self.budget_mb))
        from fleetroom_agent.identity import AgentIdentity

        self.agent_id = AgentIdentity.load(self.data_dir).agent_id
        return self.agent_id

    def command_line(self, *, produce: bool, devices: int, per_put: int, interval: float,
                     max_items: int, backoff_cap: float) -> list[str]:
        """The driver's arguments (after ``python -m tests.support.chaos_agent``)."""
        args = ["--config", str(self.config), "--data-dir", str(self.data_dir),
                "--tag", self.tag, "--devices", str(devices), "--per-put", str(per_put),
                "--interval", str(interval), "--max-items", str(max_items),
                "--backoff-cap", str(backoff_cap)]
        return [*args, "--produce"] if produce else args

    def _unshared(self, args: list[str]) -> list[str]:
        # A private mount namespace: the tmpfs exists for the driver only, over a data
        # directory whose files are copied in first (and back never: the test reads the
        # server and the journal, which lives outside).
        seed = self.root / f"seed-{self.tag}"
        seed.mkdir(exist_ok=True)
        script = ('set -e; cp -a "$1/." "$2/"; mount -t tmpfs -o size="$3",mode=0700 tmpfs '
                  '"$1"; cp -a "$2/." "$1/"; shift 3; exec "$@"')
        unshare = ["unshare", "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare[1:1] = ["--user", "--map-root-user"]
        return [*unshare, "sh", "-c", script, "sh", str(self.data_dir), str(seed),
                str(self.tmpfs_bytes), sys.executable, "-m", "tests.support.chaos_agent",
                *args]

    def start(self, *, produce: bool = False, devices: int = 40, per_put: int = 3,
              interval: float = 0.05, max_items: int = 50, backoff_cap: float = 1.0,
              fresh: bool = False, timeout: float = 120) -> dict[str, Any]:
        """Start the driver and wait for its ``running`` event (``fresh``: a new Python
        process even when a zygote is there)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}
        env["FLEETROOM_AGENT_JOURNAL"] = str(self.journal)
        args = self.command_line(produce=produce, devices=devices, per_put=per_put,
                                 interval=interval, max_items=max_items,
                                 backoff_cap=backoff_cap)
        if self.tmpfs_bytes is not None:
            self.proc = _popen(self._unshared(args), env, self.log)
        elif self.zygote is not None and not fresh:
            self.proc = self.zygote.spawn(args, {"FLEETROOM_AGENT_JOURNAL": str(self.journal)},
                                          self.log)
        else:
            self.proc = _popen([sys.executable, "-m", "tests.support.chaos_agent", *args],
                               env, self.log)
        self._events = queue.Queue()
        self.starts += 1
        threading.Thread(target=self._read, args=(self.proc.stdout, self._events),
                         daemon=True).start()
        return self.wait_event("running", timeout)

    @staticmethod
    def _read(stream: IO[str], events: queue.Queue[str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                events.put(line)
        events.put("")

    def wait_event(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """The next event called ``name`` (other events are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AgentError(f"no {name!r} event within {timeout} s; see {self.log}") \
                    from None
            if not line:
                code = self.proc.wait(5) if self.proc else None
                raise AgentError(f"the agent exited ({code}) before {name!r}; see {self.log}")
            doc: dict[str, Any] = json.loads(line)
            if doc.get("event") == name:
                return doc

    def call(self, cmd: str, timeout: float = 120, **args: Any) -> dict[str, Any]:
        """One control command; its answer."""
        assert self.proc is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        doc = self.wait_event("answer", timeout)
        if not doc.pop("ok"):
            raise AgentError(f"{cmd}: {doc.get('error')}")
        return doc

    def running(self) -> bool:
        """Whether the driver process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def _release(self) -> None:
        assert self.proc is not None
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()

    def kill(self) -> None:
        """kill -9 of the agent process."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc.wait(30) is None:
            raise AgentError(f"pid {self.proc.pid} survived SIGKILL for 30 s")
        self._release()
        self.kills += 1

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the runtime closes cleanly); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.proc.wait(timeout) is None:
                self.kill()
                raise AgentError(f"the agent ignored SIGTERM for {timeout} s")
        self._release()
        return int(self.proc.code or 0)

    def wait_drained(self, timeout: float = 120) -> dict[str, Any]:
        """Until the outbox is empty (everything acknowledged)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.call("stats")
            if st["items"] == 0:
                return st
            if time.monotonic() > deadline:
                raise AgentError(f"outbox not drained after {timeout} s: {st['items']} items, "
                                 f"sender {st['sender']}")
            time.sleep(0.2)

    def close(self) -> None:
        """Make sure the driver is gone."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(AgentError, OSError):
                self.stop(20)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--zygote":
        sys.exit(zygote_main(int(sys.argv[2])))
    sys.exit(driver_main())

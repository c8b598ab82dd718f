"""``fleetroom-agent run``: everything in one ``asyncio.TaskGroup``, stopped cleanly by a signal.

Tasks: the scheduler (which starts collection jobs), the command worker, the
sender (supervised: if it ever raises it is restarted after a pause, never in a
tight loop), the local status page, and a small loop writing ``state.json``.
SIGTERM or SIGINT ends them all; the outbox, the SNMP client and the transports
are closed, the last state is written.

Nothing the outside world sends can stop the agent: a malformed SNMP answer, a
broken profile, a full disk, a transport bug — each is logged, recorded in the
state (``last_error``) and the agent carries on.  Only what makes running
pointless stops it at start-up, with a clear message: no identity, an unusable
config, a data directory it cannot write, another agent on the same directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import platform
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from fleetroom_profiles import ProfileError, ProfileSet
from fleetroom_protocol import Reading
from fleetroom_protocol.envelope import EnvelopeError, split
from fleetroom_protocol.messages import AgentState, Reply, Schedule

from ..backoff import Backoff
from ..discovery.targets import parse_single_target
from ..outbox import Outbox, OutboxError, OutboxStats
from ..snmp.client import SnmpClient
from .collector import Collector, Outcome
from .commands import CommandRunner, HandlerResult, Refused
from .config import AgentConfig
from .devices import DeviceRegistry
from .diagnostics import diagnostics_bundle
from .scheduler import Clock, Scheduler, ScheduleStore, SystemClock
from .state import RuntimeState, outbox_summary, write_state

if TYPE_CHECKING:
    import random

    from ..identity import AgentIdentity, CounterStore
    from ..transports.base import Transport

log = logging.getLogger(__name__)

STATE_EVERY_S: Final = 5.0
SENDER_RESTART_S: Final = (5.0, 300.0)
"""Pause before restarting a crashed sender: first, and at most (doubling)."""

_server_ts: contextvars.ContextVar[datetime | None] = contextvars.ContextVar(
    "fleetroom_server_ts", default=None)
"""The ``ts`` of the server envelope being handled (set where the raw bytes pass,
read in ``on_reply``): command expiry is measured on the server's clock."""


def agent_version() -> str:
    """The installed agent's version."""
    from ..enroll import agent_version as version

    return version()


def note_server_ts(raw: bytes | None) -> None:
    """Remember the header time of a server envelope about to be verified.

    Only read in ``on_reply``, which the sender calls after the signature checked
    out, so an unverified time is never acted upon.
    """
    if not raw:
        return
    try:
        _server_ts.set(split(raw).header.ts)
    except EnvelopeError:
        _server_ts.set(None)


class ServerTimeTap:
    """Wraps a transport so the reply's envelope time reaches ``on_reply`` (the
    sender passes the verified :class:`Reply` only, not its header)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name

    async def exchange(self, envelope: bytes) -> bytes | None:
        """The inner exchange; notes the reply's ``ts``."""
        raw = await self.inner.exchange(envelope)
        note_server_ts(raw)
        return raw

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


class SenderLike(Protocol):
    """What the runtime needs of :class:`fleetroom_agent.sender.Sender`."""

    async def run(self) -> None:
        """Deliver until suspended."""
        ...

    def wake(self) -> None:
        """Send now."""
        ...

    def status(self) -> Any:
        """Delivery health (``SenderStatus`` with ``as_dict()``)."""
        ...

    async def aclose(self) -> None:
        """Close transports."""
        ...


SenderFactory = Callable[[Outbox, Callable[[], AgentState], Callable[[Reply], Awaitable[None]]],
                         SenderLike]


class _Stop(Exception):
    """Raised inside the TaskGroup to end it on a signal."""


@dataclass
class RuntimeParts:
    """Things made outside the runtime (so tests can pass their own)."""

    sender_factory: SenderFactory
    client: SnmpClient | None = None
    clock: Clock | None = None
    rng: random.Random | None = None
    identity: AgentIdentity | None = None
    counter: CounterStore | None = None


class Runtime:
    """The running agent: collection, scheduling, commands, status (see module doc)."""

    def __init__(self, config: AgentConfig, data_dir: Path, agent_id: str,
                 parts: RuntimeParts) -> None:
        self.config = config
        self.data_dir = data_dir
        self.agent_id = agent_id
        self.identity = parts.identity
        self.counter = parts.counter
        self.state = RuntimeState()
        self.version = agent_version()
        self.hostname = socket.gethostname()
        self.outbox = Outbox.in_data_dir(data_dir, agent_id, budget_bytes=config.budget_bytes)
        if self.outbox.quarantined_to is not None:
            self.state.error("outbox", f"the outbox was corrupt; quarantined as "
                                       f"{self.outbox.quarantined_to.name}, gap recorded")
        self._stats: OutboxStats = self.outbox.stats()
        self.registry = DeviceRegistry(data_dir)
        if parts.client is None:
            from ..scan import default_client

            parts.client = default_client()
        self.client = parts.client
        self.collector = Collector(
            client=self.client, profiles=self.load_profiles(), credentials=config.credentials,
            allowlist=config.allowlist, outbox=self.outbox, registry=self.registry,
            state=self.state, timing=config.timing, wake=self.wake,
            scan_targets=config.file.scan.targets, scan_exclude=config.file.scan.exclude,
            scan_allow=frozenset(config.file.scan.allow),
            max_addresses=config.file.scan.max_addresses,
            concurrency=config.file.scan.concurrency)
        initial = self.identity.schedule if self.identity is not None else None
        self.schedule = ScheduleStore(data_dir, config.file.schedule, initial)
        self.clock = parts.clock or SystemClock()
        self.scheduler = Scheduler(self, self.schedule, data_dir, clock=self.clock,
                                   rng=parts.rng, on_error=self._job_error)
        self.sender = parts.sender_factory(self.outbox, self.agent_state, self.on_reply)
        self.commands = CommandRunner(data_dir, self, allowed_kinds=config.file.policy.commands,
                                      put=self.collector.put_items, wake=self.wake,
                                      monotonic=self.clock.monotonic)
        self._seen_sender_error: str | None = None
        self._bundle_version: int | None = self._profiles_version()
        self.page: Any = None

    # ------------------------------------------------------------------ profiles

    def load_profiles(self) -> ProfileSet:
        """Shipped + installed bundle + local dirs; a broken file is skipped and
        recorded, never fatal (the shipped profiles always load)."""
        from ..profile_update import load_profiles, status

        extra = self.config.profile_dirs()
        try:
            profiles = load_profiles(self.data_dir, extra)
        except ProfileError as exc:
            for p in exc.problems[:5]:
                self.state.error("profiles", str(p))
            bundle = status(self.data_dir).get("directory")
            dirs = [Path(bundle)] if bundle else []
            profiles = ProfileSet.load([*dirs, *extra], strict=False)
            log.error("profiles: %d problem(s); broken files are skipped", len(exc.problems))
        except Exception as exc:  # an unreadable bundle directory, …: shipped + local
            log.exception("loading profiles failed")
            self.state.error("profiles", f"{type(exc).__name__}: {exc}")
            profiles = ProfileSet.load(extra, strict=False)
        self.state.profiles = {"count": len(profiles.profiles),
                               "problems": [str(p) for p in profiles.problems[:10]]}
        return profiles

    async def update_profiles_now(self) -> str:
        """Check the server for a newer signed bundle, install it, reload."""
        from ..profile_update import ProfileUpdateError, check_and_apply

        if self.identity is None:
            raise ProfileUpdateError("config", "no identity: the agent is not enrolled")
        try:
            result = await check_and_apply(self.identity, self.data_dir,
                                           extra_dirs=self.config.profile_dirs(),
                                           counter=self.counter)
        finally:
            # Reload in every case: a failed install may have rolled back.
            self.collector.set_profiles(await asyncio.to_thread(self.load_profiles))
        return result

    # ------------------------------------------------------------------ jobs

    def _job_error(self, name: str, exc: BaseException) -> None:
        self.state.error(name, f"{type(exc).__name__}: {exc}")

    async def _job(self, name: str, work: Awaitable[Outcome | str]) -> Outcome | str:
        self.state.job_started(name)
        t0 = time.monotonic()
        try:
            result = await work
        except Exception as exc:
            self.state.job_finished(name, "failed", time.monotonic() - t0, str(exc))
            raise
        if isinstance(result, Outcome):
            detail = result.summary()
            for e in result.errors[:3]:
                self.state.error(name, e)
        else:
            detail = result
        self.state.job_finished(name, "done", time.monotonic() - t0, detail)
        return result

    async def status_poll(self) -> None:
        """Scheduler job."""
        await self._job("status-poll", self.collector.status_poll())

    async def meter_read(self) -> None:
        """Scheduler job."""
        await self._job("meter-read", self.collector.read_known())

    async def month_end_read(self, month: str) -> None:
        """Scheduler job."""
        await self._job("month-end-read", self.collector.read_known(month=month))

    async def rediscover(self) -> None:
        """Scheduler job."""
        await self._job("rediscovery", self.collector.discover())

    async def profile_check(self) -> None:
        """Scheduler job: the daily profile-bundle check."""
        await self._job("profile-check", self.update_profiles_now())

    # ------------------------------------------------------------------ commands

    async def scan_now(self, args: dict[str, Any]) -> HandlerResult:
        """``scan-now`` with optional ``targets`` inside the allowlist."""
        _only(args, {"targets"})
        targets = args.get("targets")
        if targets is not None:
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise ValueError("targets must be a list of strings")
            refused = [why for t in targets if (why := self.config.allowlist.check_spec(t))]
            if refused:
                raise Refused("; ".join(refused))
        outcome = await self._job("scan-now", self.collector.discover(targets))
        assert isinstance(outcome, Outcome)
        return HandlerResult("done", outcome.summary(), {
            "read": outcome.read, "failed": outcome.failed, "refused": outcome.refused,
            "addresses": outcome.addresses})

    async def read_device(self, args: dict[str, Any]) -> HandlerResult:
        """``read-device``: ``target`` must be allowed by the local allowlist."""
        _only(args, {"target"})
        text = args.get("target")
        if not isinstance(text, str) or not text:
            raise ValueError("target (an address, host:port or hostname) is required")
        why = self.config.allowlist.check_spec(text)
        if why is not None:
            raise Refused(why)
        target = await parse_single_target(text)
        if not self.config.allowlist.permits(target):
            raise Refused(f"{text} resolves to {target.address}, outside the local allowlist")
        result, _ = await self.collector.read_target(target)
        if isinstance(result, Reading):
            return HandlerResult("done", f"read {target}", {
                "target": str(target), "serial": result.identity.serial,
                "model": result.identity.model, "alerts": len(result.alerts)})
        if getattr(result, "kind", "") == "refused":
            raise Refused(result.reason)
        return HandlerResult("failed", f"{target}: {result.reason}")

    async def update_profiles(self, args: dict[str, Any]) -> HandlerResult:
        """``update-profiles``."""
        from ..profile_update import ProfileUpdateError

        _only(args, set())
        try:
            detail = await self._job("update-profiles", self.update_profiles_now())
        except ProfileUpdateError as exc:
            return HandlerResult("failed", str(exc))
        return HandlerResult("done", str(detail))

    async def set_schedule(self, args: dict[str, Any]) -> HandlerResult:
        """``set-schedule``: a whole :class:`Schedule`, protocol limits enforced."""
        new = Schedule.model_validate(args.get("schedule", args))
        current = self.schedule.schedule.version
        if not self.schedule.apply(new):
            return HandlerResult("refused", f"schedule version {new.version} is not newer "
                                            f"than the one in force ({current})")
        return HandlerResult("done", f"schedule version {new.version} in force",
                             {"schedule": new.model_dump(mode="json")})

    async def diagnostics(self, args: dict[str, Any]) -> HandlerResult:
        """``diagnostics``: a small JSON bundle (no secrets)."""
        _only(args, set())
        bundle = await asyncio.to_thread(diagnostics_bundle, self)
        return HandlerResult("done", "diagnostics collected", bundle)

    # ------------------------------------------------------------------ sender side

    def wake(self) -> None:
        """Ask the sender to send now (critical alert, command result)."""
        self.sender.wake()

    async def on_reply(self, reply: Reply) -> None:
        """A verified reply: take a newer schedule, queue new commands."""
        if reply.schedule is not None:
            try:
                self.schedule.apply(reply.schedule)
            except OSError as exc:
                self.state.error("schedule", f"cannot store the new schedule: {exc}")
        if reply.commands:
            await self.commands.receive(reply.commands, _server_ts.get())

    async def accept_push(self, raw: bytes, accept: Callable[[bytes], Awaitable[Reply]],
                          ) -> Reply:
        """An MQTT push: note its time, then let the sender verify and apply it."""
        note_server_ts(raw)
        return await accept(raw)

    def agent_state(self) -> AgentState:
        """For every envelope: cheap (cached outbox stats), no I/O."""
        stats = self._stats
        return AgentState(
            version=self.version, hostname=self.hostname,
            platform=f"{platform.system()} {platform.release()} / Python "
                     f"{platform.python_version()}",
            queue_items=stats.total_items, queue_bytes=stats.total_bytes,
            oldest_unsent_at=(datetime.fromtimestamp(stats.oldest_unsent_at, UTC)
                              if stats.oldest_unsent_at else None),
            last_error=self.state.last_error, devices=len(self.registry.devices),
            weak_crypto_devices=self.collector.weak_crypto_devices()[:500],
            profiles_version=self._bundle_version,
            schedule_version=self.schedule.schedule.version)

    def _profiles_version(self) -> int | None:
        from ..profile_update import installed_version

        try:
            return installed_version(self.data_dir) or None
        except Exception:
            return None

    # ------------------------------------------------------------------ state file

    def sender_status(self) -> dict[str, Any]:
        """The sender's status as JSON-able data."""
        try:
            st = self.sender.status()
        except Exception as exc:
            return {"error": str(exc)}
        if hasattr(st, "as_dict"):
            return dict(st.as_dict())
        return dict(st) if isinstance(st, dict) else {}

    def snapshot(self) -> dict[str, Any]:
        """What ``state.json`` holds (see :func:`.status_read.read_status`)."""
        sender = self.sender_status()
        err = sender.get("last_error")
        if err and err != self._seen_sender_error:
            self._seen_sender_error = err
            self.state.error("delivery", str(err))
        transports = [{"name": name, "state": "backing off" if t.get("ready_at") else "ready",
                       **t} for name, t in (sender.get("transports") or {}).items()]
        eff = self.schedule.effective
        return {
            "agent_id": self.agent_id, "version": self.version, "hostname": self.hostname,
            **self.state.as_dict(),
            "last_ack_at": sender.get("last_ack_at"),
            "last_contact_at": sender.get("last_contact_at"),
            "suspended": sender.get("suspended"),
            "transport": sender.get("last_transport"),
            "transports": transports,
            "sender": sender,
            "schedule": {**eff.server.model_dump(mode="json"),
                         "effective_status_poll_s": eff.status_poll_s,
                         "effective_profile_check": eff.profile_check},
            "next_runs": self.scheduler.describe(),
            "devices": len(self.registry.devices),
            "weak_crypto_devices": self.collector.weak_crypto_devices(),
            "outbox": outbox_summary(self._stats),
        }

    async def write_state_now(self) -> None:
        """Refresh the outbox stats and write ``state.json``."""
        try:
            self._stats = await asyncio.to_thread(self.outbox.stats)
        except Exception as exc:  # a locked or broken outbox: keep the previous figures
            self.state.error("outbox", f"stats: {exc}")
        self._bundle_version = await asyncio.to_thread(self._profiles_version)
        self.state.profiles["bundle_version"] = self._bundle_version
        try:
            await asyncio.to_thread(write_state, self.data_dir, self.snapshot())
        except OSError as exc:
            log.error("cannot write the state file: %s", exc)

    async def _state_loop(self) -> None:
        while True:
            await self.write_state_now()
            await asyncio.sleep(STATE_EVERY_S)

    # ------------------------------------------------------------------ running

    async def _supervise_sender(self) -> None:
        pause = SENDER_RESTART_S[0]
        while True:
            try:
                await self.sender.run()
            except Exception as exc:
                log.exception("the sender crashed; restarting in %.0f s", pause)
                self.state.error("delivery", f"sender crashed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(pause)
                pause = min(pause * 2, SENDER_RESTART_S[1])
                continue
            # run() returns only when the server suspended or revoked this agent:
            # keep collecting (nothing is lost), stop sending until re-enrolled.
            self.state.error("delivery", "the server stopped accepting this agent; "
                                         "collection continues, re-enroll to send again")
            await asyncio.Event().wait()

    async def _status_page(self) -> None:
        from ..localui.server import StatusPage

        sp = self.config.file.status_page
        # The default facts: the read-only status (never a second Outbox per request).
        self.page = StatusPage(self.data_dir, host=sp.bind, port=sp.port)
        try:
            await self.page.start()
        except OSError as exc:
            self.state.error("status-page", f"cannot listen on {sp.bind}:{sp.port}: {exc}")
            return
        await self.page.serve_forever()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then close everything."""
        async def stopper() -> None:
            await stop.wait()
            raise _Stop

        log.info("agent %s running on %s (%d known devices)", self.agent_id, self.data_dir,
                 len(self.registry.devices))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.scheduler.run(), name="scheduler")
                tg.create_task(self.commands.run(), name="commands")
                tg.create_task(self._supervise_sender(), name="sender")
                tg.create_task(self._state_loop(), name="state")
                if self.config.file.status_page.enabled:
                    tg.create_task(self._status_page(), name="status-page")
                tg.create_task(stopper(), name="stopper")
        except* _Stop:
            log.info("stopping")
        finally:
            await self.close()

    async def close(self) -> None:
        """Release everything; write the final state."""
        with contextlib.suppress(Exception):
            await self.write_state_now()
        with contextlib.suppress(Exception):
            await self.sender.aclose()
        with contextlib.suppress(Exception):
            await self.client.close()
        self.registry.save()
        self.outbox.close()


def _only(args: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ValueError(f"unknown argument(s): {', '.join(unknown)}")


# ---------------------------------------------------------------------- production


def build_transports(config: AgentConfig, identity: AgentIdentity,
                     ) -> tuple[list[Transport], Any]:
    """The transports of ``[transports] order`` that this agent can use, each tapped
    for the server time; plus the MQTT transport (for pushes), if any."""
    from ..transports.https import HttpsTransport

    out: list[Transport] = []
    mqtt: Any = None
    for name in config.file.transports.order:
        if name == "https":
            out.append(ServerTimeTap(HttpsTransport(
                identity.server_url, ca_file=identity.ca_file, pins=identity.pins,
                proxy=identity.proxy, user_agent=f"fleetroom-agent/{agent_version()}")))
        elif name == "mqtt":
            if identity.mqtt is None:
                log.info("mqtt: not offered at enrollment; skipped")
                continue
            from ..transports.mqtt import MqttTransport

            mqtt = MqttTransport.from_identity(identity,
                                               protocol=config.file.transports.mqtt.protocol)
            out.append(ServerTimeTap(mqtt))
        elif name == "email":
            if config.smtp is None:
                log.info("email: no [transports.email] in the config; skipped")
                continue
            from ..transports.smtp import SmtpTransport

            out.append(ServerTimeTap(SmtpTransport(config.smtp, identity)))
    return out, mqtt


def setup_logging(level: str) -> None:
    """Plain lines on stderr (journald and service wrappers add the time)."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    logging.getLogger("pysnmp").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def run_agent(config: AgentConfig, data_dir: Path) -> int:
    """Assemble the production runtime and run it until SIGTERM/SIGINT; exit code."""
    from ..identity import AgentIdentity, CounterStore, IdentityError
    from ..sender import Sender
    from .lock import AlreadyRunning, RunLock

    try:
        identity = AgentIdentity.load(data_dir)
    except IdentityError as exc:
        log.error("%s", exc)
        return 2
    lock = RunLock(data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 3
    try:
        counter = CounterStore(data_dir)
        transports, mqtt = build_transports(config, identity)
        if not transports:
            log.error("no usable transport in [transports] order = %s",
                      config.file.transports.order)
            return 2

        def make_sender(outbox: Outbox, state: Callable[[], AgentState],
                        on_reply: Callable[[Reply], Awaitable[None]]) -> SenderLike:
            delivery = config.file.transports
            return Sender(identity, outbox, transports, state, on_reply, counter=counter,
                          max_items=delivery.batch_items, max_bytes=delivery.batch_kb * 1024,
                          backoff=Backoff(cap_s=delivery.backoff_cap_s))

        try:
            runtime = Runtime(config, data_dir, identity.agent_id,
                              RuntimeParts(make_sender, identity=identity, counter=counter))
        except (OSError, sqlite3.Error, OutboxError) as exc:
            log.error("cannot open the outbox in %s: %s", data_dir, exc)
            return 2
        if mqtt is not None:
            sender = runtime.sender
            assert isinstance(sender, Sender)
            mqtt.on_push = lambda raw: runtime.accept_push(raw, sender.accept_push)
            await mqtt.start()
        stop = asyncio.Event()
        _install_signals(stop)
        await runtime.run(stop)
        return 0
    finally:
        lock.release()


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))


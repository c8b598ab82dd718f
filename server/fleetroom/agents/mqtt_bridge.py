"""``fleetroom mqtt-bridge``: agents' envelopes from the broker in, replies out.

One bridge process subscribes to every agent's up topic through a *shared*
subscription (``$share/<group>/fleetroom/v1/agents/+/up``), so several bridge
processes split the agents' messages between them and any one may stop.  Each
envelope goes to :func:`fleetroom.agents.receive.receive_envelope` — the same
function the HTTPS view and the mail intake call, which authenticates, stores
and acknowledges after commit — on a worker thread (the Django ORM is
synchronous).  The sealed reply it returns is published on that agent's down
topic (QoS 1).

Nothing is acknowledged here.  If the bridge dies between receiving an envelope
and publishing the reply, the agent times out and sends the items again in a
new envelope; the server's item keys make the repeat harmless.  So the bridge
may lose a message, and still nothing is lost.

The broker's ACL lets an agent publish only to its own up topic, so the topic
names the agent that sent a message: it is passed as ``expected_sender``, and a
reply is published only to the down topic of that same agent.  A payload that is
not an envelope, or any other failure while handling one message, is logged and
dropped; the bridge never stops because of what an agent sent.

With MQTT 5 each reply carries the status and any ``Retry-After`` as user
properties, and a refusal without a signed reply (429, 503, …) is published as
an empty message naming the request's counter — agents see "busy" at once
instead of waiting for a timeout.

:func:`push_command` publishes a sealed ``command`` envelope on an agent's down
topic from any process (a view, a task): pushed commands reach a connected
agent at once.  Pushes are best effort; commands also ride on every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiomqtt
from fleetroom_protocol.envelope import MAX_ENVELOPE_BYTES, EnvelopeError, split
from fleetroom_protocol.messages import TOPIC_PREFIX, topic_down
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetroom.agents.mqtt_broker import (
    BrokerError,
    ensure_bridge_account,
    make_client,
    run_sync,
    shared_up_filter,
)

if TYPE_CHECKING:
    from fleetroom.config import Config, MqttConfig

log = logging.getLogger("fleetroom.agents.mqtt_bridge")

TRANSPORT: Final = "mqtt"
_UP_TOPIC: Final = re.compile(re.escape(TOPIC_PREFIX) + r"/([A-Za-z0-9._-]{1,64})/up")
RECONNECT_MAX_S: Final = 60.0


class Outcome(Protocol):
    """What :func:`fleetroom.agents.receive.receive_envelope` returns (the parts used here)."""

    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def agent_id(self) -> str | None: ...


Receive = Callable[..., Outcome]
"""``receive(data, *, transport, source, expected_sender) -> Outcome`` (synchronous)."""


def default_receive(data: bytes, *, transport: str, source: str,
                    expected_sender: str | None = None) -> Outcome:
    """The real ``receive_envelope``, with stale database connections dropped first
    (a long-running process, like the request cycle does for the web server)."""
    from django.db import close_old_connections

    from fleetroom.agents.receive import receive_envelope

    close_old_connections()
    try:
        return receive_envelope(data, transport=transport, source=source,
                                expected_sender=expected_sender)
    finally:
        close_old_connections()


def agent_of_topic(topic: str) -> str | None:
    """The agent id in an up topic, or None for any other topic."""
    match = _UP_TOPIC.fullmatch(topic)
    return match.group(1) if match else None


def _reply_properties(status: int, retry_after: float | None,
                      reply_to: int | None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    pairs = [("status", str(status))]
    if retry_after is not None:
        pairs.append(("retry-after", f"{retry_after:g}"))
    if reply_to is not None:
        pairs.append(("reply-to", str(reply_to)))
    props.UserProperty = pairs
    return props


class MqttBridge:
    """The bridge's connection and its worker threads (see the module docstring)."""

    def __init__(self, cfg: MqttConfig, *, receive: Receive = default_receive,
                 workers: int | None = None, max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
                 ) -> None:
        self.cfg = cfg
        self.receive = receive
        self.max_envelope_bytes = max_envelope_bytes
        self.workers = workers or cfg.workers
        self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                        thread_name_prefix="mqtt-bridge")
        self._slots = asyncio.Semaphore(self.workers * 2)
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.handled = 0
        self.dropped = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Receive until ``stop`` is set; reconnect with back-off after any failure."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                    failures = 0
                except aiomqtt.MqttError as exc:
                    failures += 1
                    log.warning("mqtt bridge: connection to %s failed or was lost: %s",
                                self.cfg.url, exc)
                if stop.is_set():
                    break
                delay = min(RECONNECT_MAX_S, 0.5 * 2 ** min(failures, 8))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.aclose()

    async def _session(self, stop: asyncio.Event) -> None:
        client = make_client(self.cfg, username=self.cfg.bridge_username,
                             password=self.cfg.bridge_password.get_secret_value(),
                             max_concurrent_outgoing_calls=self.workers * 2)
        async with client:
            granted = await client.subscribe(shared_up_filter(self.cfg), qos=1)
            codes = [getattr(c, "value", c) for c in granted]
            if any(isinstance(c, int) and c >= 0x80 for c in codes):
                raise aiomqtt.MqttError(f"the broker refused the subscription to "
                                        f"{shared_up_filter(self.cfg)} (ACL of "
                                        f"{self.cfg.bridge_username}?)")
            log.info("mqtt bridge: connected to %s, subscribed to %s", self.cfg.url,
                     shared_up_filter(self.cfg))
            self.connected.set()
            stopping = asyncio.create_task(stop.wait())
            try:
                messages = aiter(client.messages)
                while not stop.is_set():
                    nxt = asyncio.ensure_future(anext(messages))
                    done, _ = await asyncio.wait({nxt, stopping},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if nxt not in done:
                        nxt.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await nxt
                        break
                    message = nxt.result()
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(client, message))
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
                # Let envelopes in progress finish and their replies go out.
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=30)
            finally:
                stopping.cancel()
                self.connected.clear()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """One envelope: check topic and sender, receive it, publish the reply."""
        topic = str(message.topic)
        try:
            agent_id = agent_of_topic(topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if agent_id is None:
                self._drop(f"message on unexpected topic {topic!r}")
                return
            reply_to: int | None = None
            with contextlib.suppress(EnvelopeError):  # receive_envelope refuses it
                reply_to = split(payload, max_bytes=self.max_envelope_bytes).header.ctr
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._pool, lambda: self.receive(
                payload, transport=TRANSPORT, source=f"mqtt:{agent_id}",
                expected_sender=agent_id))
            self.handled += 1
            v5 = self.cfg.protocol == "5"
            if outcome.body:
                if outcome.agent_id is not None and outcome.agent_id != agent_id:
                    self._drop(f"reply for {outcome.agent_id!r} to a message on "
                               f"{agent_id}'s topic")
                    return
                await client.publish(topic_down(agent_id), outcome.body, qos=1,
                                     properties=_reply_properties(
                                         outcome.status, outcome.retry_after, reply_to)
                                     if v5 else None)
            elif v5 and reply_to is not None and outcome.agent_id == agent_id:
                # Refused without a signed reply (busy, too large, …), authenticated as
                # this agent: tell it now rather than let it wait for a timeout.
                await client.publish(topic_down(agent_id), b"", qos=1,
                                     properties=_reply_properties(
                                         outcome.status, outcome.retry_after, reply_to))
            if outcome.status != 200:
                log.info("mqtt bridge: %s answered %s", agent_id, outcome.status)
        except aiomqtt.MqttError as exc:
            log.warning("mqtt bridge: reply on %s not published (the agent will resend): %s",
                        topic, exc)
        except Exception:
            self.dropped += 1
            log.exception("mqtt bridge: handling a message on %s failed; dropped", topic)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        log.warning("mqtt bridge: dropped %s", why)

    async def aclose(self) -> None:
        """Wait for the worker threads (their envelopes are committed or rolled back)."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)


# --- pushes from any process -----------------------------------------------------------


def push_command(agent_id: str, envelope: bytes, *, config: MqttConfig | None = None) -> bool:
    """Publish a sealed ``command`` envelope on the agent's down topic (QoS 1).

    ``envelope`` is sealed by the caller (the command service: server key, ``to`` =
    the agent, kind ``command``, body :class:`fleetroom_protocol.messages.Reply`
    with the pending commands).  Returns True when the broker took it, False when
    MQTT is off or the broker cannot be reached — a push is a shortcut; the
    commands still ride on the agent's next reply.  Usable from synchronous code.
    """
    from fleetroom.agents.mqtt_broker import _config

    cfg = _config(config)
    if not cfg.enabled:
        return False
    if agent_of_topic(f"{TOPIC_PREFIX}/{agent_id}/up") is None:
        raise ValueError("not an agent id")

    async def publish() -> None:
        async with make_client(cfg, username=cfg.bridge_username,
                               password=cfg.bridge_password.get_secret_value()) as client:
            await client.publish(topic_down(agent_id), envelope, qos=1)

    try:
        run_sync(publish)
    except (aiomqtt.MqttError, BrokerError, OSError) as exc:
        log.warning("mqtt push to %s failed (it will get the commands with its next "
                    "reply): %s", agent_id, exc)
        return False
    return True


# --- wiring into the agents app's signals -----------------------------------------------


def _on_enroll(sender: object, *, agent: Any, **_: object) -> dict[str, object]:
    """``enroll_extras``: a broker account for the (re-)enrolling agent.

    Runs inside the enrollment transaction; a broker that cannot be reached raises,
    which aborts the enrollment (the token is not used up; the agent may retry),
    rather than enrolling an agent that would lack its MQTT credentials for good.
    """
    from fleetroom.agents.mqtt_broker import provision_agent

    settings = provision_agent(agent.public_id)
    return {"mqtt": settings} if settings is not None else {}


def _on_agent_changed(sender: object, *, agent: Any, change: str, **_: object) -> None:
    """``agent_changed``: a revoked agent loses its broker account (and connection).

    A suspended agent keeps it, so that it still receives the signed "suspended"
    reply that tells it to stop.
    """
    from fleetroom.agents.mqtt_broker import _config, revoke_agent

    if change != "revoked" or not _config(None).enabled:
        return
    try:
        revoke_agent(agent.public_id)
    except BrokerError as exc:
        # Its key is refused by receive_envelope anyway; the account is only clutter.
        log.error("mqtt: could not delete the broker account of revoked agent %s: %s "
                  "(delete it with: mosquitto_ctrl dynsec deleteClient %s)",
                  agent.public_id, exc, agent.public_id)


def _on_command_issued(sender: object, *, command: Any, **_: object) -> None:
    """``command_issued``: push the agent's due commands now instead of at its next poll.

    Only to an agent whose latest message came over MQTT, so it is likely listening:
    a push marks the commands delivered, and one that nobody receives would then
    wait for the redelivery interval instead of riding on the agent's next reply.
    """
    from fleetroom.agents.mqtt_broker import _config
    from fleetroom.agents.receive import push_commands

    if not _config(None).enabled or command.agent.last_transport != TRANSPORT:
        return
    envelope = push_commands(command.agent)
    if envelope is not None:
        push_command(command.agent.public_id, envelope)


def connect_signals() -> None:
    """Connect the receivers above (idempotent); called from the agents app's ``ready``."""
    from fleetroom.agents import signals

    signals.enroll_extras.connect(_on_enroll, dispatch_uid="fleetroom.mqtt.enroll")
    signals.agent_changed.connect(_on_agent_changed, dispatch_uid="fleetroom.mqtt.changed")
    signals.command_issued.connect(_on_command_issued, dispatch_uid="fleetroom.mqtt.command")


# --- the process ------------------------------------------------------------------------


def run_forever(bridge: MqttBridge, *, setup: bool = True,
                reset_password: bool = False) -> None:
    """Run the bridge until SIGTERM or SIGINT (after making sure its account exists)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if setup:
            await _setup(bridge.cfg, stop, reset_password=reset_password)
        if not stop.is_set():
            await bridge.run(stop)

    asyncio.run(main())


async def _setup(cfg: MqttConfig, stop: asyncio.Event, *, reset_password: bool) -> None:
    """Create the bridge's role and account, retrying while the broker is down."""
    delay = 1.0
    while not stop.is_set():
        try:
            await ensure_bridge_account(cfg, reset_password=reset_password)
            log.info("mqtt bridge: broker account %s is ready", cfg.bridge_username)
            return
        except BrokerError as exc:
            log.warning("mqtt bridge: cannot set up the broker account yet: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(RECONNECT_MAX_S, delay * 2)


def main(load_config: Callable[[], Config], setup_django: Callable[[], None], *,
         setup: bool = True, reset_password: bool = False) -> int:
    """The body of ``fleetroom mqtt-bridge``; returns the exit status."""
    import typer

    cfg = load_config()
    if not cfg.mqtt.enabled:
        typer.echo("error: MQTT is not configured: set [mqtt] url, bridge_password and "
                   "admin_password (docs/mqtt.md)", err=True)
        return 2
    setup_django()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_forever(MqttBridge(cfg.mqtt), setup=setup, reset_password=reset_password)
    return 0

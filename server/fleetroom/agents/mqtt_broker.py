"""Broker accounts for the MQTT transport: one per agent, one for the bridges.

Mechanism: Mosquitto's **dynamic-security plugin** (Mosquitto ≥ 2.0), driven over
MQTT by an administrator account (``[mqtt] admin_username``).  Why this and not a
password file plus ACL file:

* the server needs no access to the broker's files and no right to signal its
  process — the broker may run on another machine or in another container;
* a change applies at once, without a reload, and deleting an account
  disconnects an agent that is still connected (the plugin kicks it);
* the plugin stores only PBKDF2-SHA512 hashes.  The server stores nothing: an
  agent's password is generated here, sent once to the broker (over TLS) and once
  to the agent in its enrollment response, and then forgotten.

The plugin in Mosquitto 2.0 has no ``%u`` substitution in ACLs, so every agent
gets its own role, ``fleetroom-agent-<id>``, allowing exactly: publish to its up
topic, subscribe to and receive from its down topic.  Everything else falls to
the default ACL access (publish and subscribe denied).  The bridge role may
subscribe to every agent's up topic (also as a shared subscription, so several
bridges split the load) and publish to every down topic.

:func:`provision_agent` and :func:`revoke_agent` are what enrollment and
revocation call; :func:`ensure_bridge_account` is run by ``fleetroom
mqtt-bridge`` at start.  The connection helpers (:func:`make_client`) are shared
with :mod:`.mqtt_bridge`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import ssl
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import aiomqtt
from fleetroom_protocol.messages import TOPIC_PREFIX, MqttSettings, topic_down, topic_up

from fleetroom.config import MqttConfig

log = logging.getLogger(__name__)

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = "$CONTROL/dynamic-security/v1/response"
BRIDGE_ROLE: Final = "fleetroom-bridge"
AGENT_ROLE_PREFIX: Final = "fleetroom-agent-"
PASSWORD_BYTES: Final = 32
_AGENT_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""Safe as a topic level and a user name: no ``/``, ``+``, ``#`` or spaces."""
_DEFAULT_PORTS: Final = {"mqtts": 8883, "wss": 443, "mqtt": 1883}

T = TypeVar("T")


class BrokerError(RuntimeError):
    """The broker could not be reached or refused a change; the message says which."""


# --- connecting ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """A broker URL taken apart (``mqtts://host:8883``, ``wss://host/mqtt``)."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def transport(self) -> str:
        return "websockets" if self.scheme == "wss" else "tcp"

    @property
    def tls(self) -> bool:
        return self.scheme != "mqtt"


def parse_url(url: str) -> BrokerAddress:
    """The parts of a broker URL (already validated by :class:`MqttConfig`)."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise BrokerError(f"not a broker URL: {url!r} (mqtts://host:8883 or wss://host/mqtt)")
    return BrokerAddress(scheme=parts.scheme, host=parts.hostname,
                         port=parts.port or _DEFAULT_PORTS[parts.scheme],
                         path=parts.path or "/mqtt")


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """TLS ≥ 1.2 with the configured CA (or the system's), host name checked."""
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def make_client(cfg: MqttConfig, *, username: str, password: str,
                identifier: str | None = None, **extra: Any) -> aiomqtt.Client:
    """An aiomqtt client for the configured broker (call inside a running loop)."""
    if not cfg.url:
        raise BrokerError("MQTT is not configured ([mqtt] url)")
    address = parse_url(cfg.url)
    protocol = (aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5"
                else aiomqtt.ProtocolVersion.V311)
    return aiomqtt.Client(
        address.host, address.port, username=username, password=password,
        identifier=identifier or f"{username}-{secrets.token_hex(6)}", protocol=protocol,
        transport="websockets" if address.transport == "websockets" else "tcp",
        websocket_path=address.path if address.transport == "websockets" else None,
        tls_context=tls_context(cfg) if address.tls else None,
        timeout=float(cfg.timeout_seconds), **extra)


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code (a Django view, a task).

    Uses a private thread when this thread already runs an event loop (an async
    view, or the bridge itself), where ``asyncio.run`` is not allowed.
    """
    async def main() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(main())
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="fleetroom-mqtt-sync", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def _config(config: MqttConfig | None) -> MqttConfig:
    if config is not None:
        return config
    from django.conf import settings

    cfg: MqttConfig = settings.CONFIG.mqtt
    return cfg


# --- the dynamic-security plugin -------------------------------------------------------


async def dynsec(cfg: MqttConfig, commands: Sequence[dict[str, Any]], *,
                 tolerate: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Send ``commands`` to the plugin as the administrator; return its responses.

    A response with an ``error`` raises :class:`BrokerError`, unless the error text
    is in ``tolerate`` (e.g. "Role already exists" when making sure a role exists).
    """
    token = secrets.token_hex(8)
    tagged = [{**c, "correlationData": f"{token}-{i}"} for i, c in enumerate(commands)]
    wanted = {c["correlationData"] for c in tagged}
    found: dict[str, dict[str, Any]] = {}
    try:
        async with make_client(cfg, username=cfg.admin_username,
                               password=cfg.admin_password.get_secret_value()) as client:
            await client.subscribe(RESPONSE_TOPIC, qos=1)
            await client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
            async with asyncio.timeout(cfg.timeout_seconds):
                async for message in client.messages:
                    try:
                        body = json.loads(message.payload)
                    except (TypeError, ValueError):
                        continue
                    if not isinstance(body, dict):
                        continue
                    for response in body.get("responses", []):
                        if response.get("correlationData") in wanted:
                            found[response["correlationData"]] = response
                    if len(found) == len(wanted):
                        break
    except TimeoutError:
        raise BrokerError("the broker did not answer the dynamic-security request within "
                          f"{cfg.timeout_seconds} s (is the plugin loaded?)") from None
    except aiomqtt.MqttError as exc:
        raise BrokerError(f"cannot reach the broker at {cfg.url} as {cfg.admin_username}: "
                          f"{exc}") from None
    results = [found[c["correlationData"]] for c in tagged]
    for command, response in zip(tagged, results, strict=True):
        error = response.get("error")
        if error and error not in tolerate:
            raise BrokerError(f"broker refused {command['command']}: {error}")
    return results


def agent_role(agent_id: str) -> str:
    return AGENT_ROLE_PREFIX + agent_id


def agent_acls(agent_id: str) -> list[dict[str, Any]]:
    """Its own up topic to publish, its own down topic to read — nothing else."""
    up, down = topic_up(agent_id), topic_down(agent_id)
    return [
        {"acltype": "publishClientSend", "topic": up, "priority": 0, "allow": True},
        {"acltype": "subscribeLiteral", "topic": down, "priority": 0, "allow": True},
        {"acltype": "publishClientReceive", "topic": down, "priority": 0, "allow": True},
        {"acltype": "unsubscribeLiteral", "topic": down, "priority": 0, "allow": True},
        # Explicit, in case an operator relaxes the broker's default ACL access.
        {"acltype": "publishClientSend", "topic": "#", "priority": -1, "allow": False},
        {"acltype": "subscribePattern", "topic": "#", "priority": -1, "allow": False},
        {"acltype": "publishClientReceive", "topic": "#", "priority": -1, "allow": False},
    ]


def shared_up_filter(cfg: MqttConfig) -> str:
    """The bridges' shared subscription to every agent's up topic."""
    return f"$share/{cfg.shared_group}/{TOPIC_PREFIX}/+/up"


def bridge_acls(cfg: MqttConfig) -> list[dict[str, Any]]:
    """Read every up topic (shared or not), write every down topic."""
    up, down = f"{TOPIC_PREFIX}/+/up", f"{TOPIC_PREFIX}/+/down"
    return [
        {"acltype": "subscribePattern", "topic": shared_up_filter(cfg), "allow": True},
        {"acltype": "subscribePattern", "topic": up, "allow": True},
        {"acltype": "publishClientReceive", "topic": up, "allow": True},
        {"acltype": "publishClientSend", "topic": down, "allow": True},
    ]


def _check_agent_id(agent_id: str) -> None:
    if not _AGENT_ID.fullmatch(agent_id):
        raise ValueError("agent id must be 1-64 letters, digits, '.', '_' or '-'")


# --- what the rest of the server calls --------------------------------------------------


def provision_agent(agent_id: str, *, config: MqttConfig | None = None) -> MqttSettings | None:
    """Create (or re-create) the agent's broker account; ``None`` when MQTT is off.

    Called by enrollment.  The password in the result exists nowhere else (the
    broker keeps a hash): put it into the enrollment response and drop it.  An
    account left from an earlier enrollment of the same id is replaced, and a
    client still connected with it is disconnected.  Raises :class:`BrokerError`
    when the broker cannot be reached or refuses.
    """
    cfg = _config(config)
    if not cfg.enabled:
        return None
    _check_agent_id(agent_id)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    role = agent_role(agent_id)
    commands: list[dict[str, Any]] = [
        {"command": "deleteClient", "username": agent_id},
        {"command": "deleteRole", "rolename": role},
        {"command": "createRole", "rolename": role, "acls": agent_acls(agent_id),
         "textdescription": "Fleetroom agent: its own topics only"},
        {"command": "createClient", "username": agent_id, "password": password,
         "clientid": agent_id, "textname": f"Fleetroom agent {agent_id}",
         "roles": [{"rolename": role, "priority": 0}]},
    ]
    run_sync(lambda: dynsec(cfg, commands, tolerate=("Client not found", "Role not found")))
    log.info("MQTT account created for agent %s", agent_id)
    return MqttSettings(url=cfg.agent_url or cfg.url or "", username=agent_id,
                        password=password, topic_up=topic_up(agent_id),
                        topic_down=topic_down(agent_id))


def revoke_agent(agent_id: str, *, config: MqttConfig | None = None) -> bool:
    """Delete the agent's broker account (disconnecting it); False when MQTT is off.

    Idempotent: an account that does not exist is not an error.
    """
    cfg = _config(config)
    if not cfg.enabled:
        return False
    _check_agent_id(agent_id)
    commands = [{"command": "deleteClient", "username": agent_id},
                {"command": "deleteRole", "rolename": agent_role(agent_id)}]
    run_sync(lambda: dynsec(cfg, commands, tolerate=("Client not found", "Role not found")))
    log.info("MQTT account deleted for agent %s", agent_id)
    return True


async def ensure_bridge_account(cfg: MqttConfig, *, reset_password: bool = False) -> None:
    """Make sure the bridge role and account exist (idempotent, disconnects nobody).

    An existing account keeps its password unless ``reset_password`` (which
    disconnects every running bridge once, so they reconnect with the new one).
    """
    commands: list[dict[str, Any]] = [
        {"command": "createRole", "rolename": BRIDGE_ROLE, "acls": bridge_acls(cfg),
         "textdescription": "Fleetroom MQTT bridge: all agents' up and down topics"}]
    commands += [{"command": "addRoleACL", "rolename": BRIDGE_ROLE, **acl}
                 for acl in bridge_acls(cfg)]
    commands.append({"command": "createClient", "username": cfg.bridge_username,
                     "password": cfg.bridge_password.get_secret_value(),
                     "textname": "Fleetroom MQTT bridge",
                     "roles": [{"rolename": BRIDGE_ROLE, "priority": 0}]})
    if reset_password:
        commands.append({"command": "setClientPassword", "username": cfg.bridge_username,
                         "password": cfg.bridge_password.get_secret_value()})
    await dynsec(cfg, commands, tolerate=("Role already exists",
                                          "ACL with this topic already exists",
                                          "Client already exists"))

"""Bodies carried in envelopes, enrollment, schedules and commands (version 1).

Agent → server: ``batch`` (outbox items plus the agent's state) and ``poll``
(state only, to fetch commands).  Server → agent: ``reply`` (acknowledgements,
commands, the schedule) and, on MQTT, ``command`` pushes with the same body.

Acknowledgement rule: the server lists an item in ``acked`` only after the
transaction that stored it has committed; the agent deletes only listed items.
Item keys are ``(agent, store, stream, seq)``: ``store`` is the id of the
agent's outbox file, so a fresh outbox after a quarantine can restart its
sequence numbers without being mistaken for repeats.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PATH_ENROLL: Final = "/agent/v1/enroll"
PATH_MESSAGES: Final = "/agent/v1/messages"
PATH_PROFILES: Final = "/agent/v1/profiles/latest"
TOPIC_PREFIX: Final = "fleetroom/v1/agents"
CONTENT_TYPE: Final = "application/vnd.fleetroom.envelope"

STREAM_READINGS: Final = "readings"
"""Scheduled meter reads (full reading snapshots; coalescible per device)."""
STREAM_ALERTS: Final = "alerts"
"""Reading snapshots sent because of a new or changed alert (critical priority)."""
STREAM_GAPS: Final = "gaps"
"""Gap records written by the outbox when something could not be kept."""
STREAM_RESULTS: Final = "results"
"""Command results."""
STREAMS: Final = frozenset({STREAM_READINGS, STREAM_ALERTS, STREAM_GAPS, STREAM_RESULTS})

MIN_STATUS_POLL_S: Final = 60
MIN_METER_READ_S: Final = 3 * 3600
MAX_METER_READ_S: Final = 92 * 86400
"""Quarterly."""


def topic_up(agent_id: str) -> str:
    """Where an agent publishes its envelopes (only it may publish there)."""
    return f"{TOPIC_PREFIX}/{agent_id}/up"


def topic_down(agent_id: str) -> str:
    """Where the server publishes replies and commands for one agent."""
    return f"{TOPIC_PREFIX}/{agent_id}/down"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Newer senders may add fields; older receivers ignore them."""

    model_config = ConfigDict(extra="ignore")


# --- schedules ----------------------------------------------------------------------


class Schedule(_Model):
    """When the agent works; steered by the server, bounded by the protocol.

    The agent adds jitter (``jitter`` × interval, spread evenly) so a thousand
    agents configured alike do not poll in the same second.
    """

    version: int = Field(default=0, ge=0)
    status_poll_s: int = Field(default=300, ge=MIN_STATUS_POLL_S, le=86400)
    meter_read_s: int = Field(default=86400, ge=MIN_METER_READ_S, le=MAX_METER_READ_S)
    month_end_read: bool = True
    """An extra meter read in the last hours of every month (billing cut-off)."""
    rediscovery_s: int = Field(default=86400, ge=3600, le=30 * 86400)
    profile_check: str = Field(default="03:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    """Local time of the daily profile-bundle check."""
    command_poll_s: int = Field(default=300, ge=30, le=3600)
    jitter: float = Field(default=0.1, ge=0, le=0.5)


# --- agent → server -----------------------------------------------------------------


class WireItem(_Model):
    """One outbox item."""

    store: str = Field(min_length=1, max_length=64)
    stream: str = Field(min_length=1, max_length=32)
    seq: int = Field(ge=1, lt=2**63)
    priority: int = Field(ge=0, le=9)
    created_at: float
    """Agent wall clock, informational only."""
    payload: Any


class AgentState(_Open):
    """What the server shows about an agent; sent with every batch and poll."""

    version: str = ""
    hostname: str = ""
    platform: str = ""
    queue_items: int = 0
    queue_bytes: int = 0
    oldest_unsent_at: datetime | None = None
    last_ack_at: datetime | None = None
    last_error: str | None = None
    devices: int = 0
    weak_crypto_devices: list[str] = Field(default_factory=list)
    """Targets read with SNMPv1/v2c or v3 without privacy or with MD5/SHA-1/DES."""
    profiles_version: int | None = None
    schedule_version: int = 0
    transport: str = ""


class BatchBody(_Model):
    """Outbox items plus state; ``items`` may be empty (then it is a heartbeat)."""

    items: list[WireItem] = Field(default_factory=list, max_length=5000)
    state: AgentState = Field(default_factory=AgentState)


class PollBody(_Model):
    """A request for commands and the schedule."""

    state: AgentState = Field(default_factory=AgentState)


def encode_batch_body(items: Iterable[tuple[str, str, int, int, float, bytes]],
                      state: AgentState) -> bytes:
    """Batch JSON built by splicing already-serialised payloads (no re-parse).

    ``items`` are ``(store, stream, seq, priority, created_at, payload_json)``; each
    payload must already be valid JSON (the outbox checks that on ``put``).
    """
    parts = []
    for store, stream, seq, priority, created_at, payload in items:
        head = json.dumps({"store": store, "stream": stream, "seq": seq,
                           "priority": priority, "created_at": created_at},
                          separators=(",", ":"))
        parts.append(head[:-1].encode() + b',"payload":' + payload + b"}")
    return (b'{"items":[' + b",".join(parts) + b'],"state":'
            + state.model_dump_json().encode() + b"}")


# --- commands -----------------------------------------------------------------------

CommandKind = Literal["scan-now", "read-device", "update-profiles", "set-schedule",
                      "diagnostics"]


class Command(_Model):
    """An instruction for one agent, carried in a signed, addressed envelope.

    ``expires_in_s`` is relative to the envelope's ``ts`` (server clock), so an
    agent with a wrong clock still expires it correctly.  ``id`` makes it
    idempotent: an agent runs each id at most once and reports the result.
    """

    id: str = Field(min_length=1, max_length=64)
    kind: CommandKind
    args: dict[str, Any] = Field(default_factory=dict)
    issued_at: datetime
    expires_in_s: int = Field(ge=1, le=30 * 86400)


class CommandResult(_Model):
    """What became of a command (payload of a ``results`` stream item)."""

    schema_: Literal["fleetroom.command-result/1"] = Field(
        "fleetroom.command-result/1", alias="schema")
    command_id: str = Field(min_length=1, max_length=64)
    outcome: Literal["done", "failed", "refused", "expired"]
    detail: str = Field(default="", max_length=2000)
    data: dict[str, Any] = Field(default_factory=dict)


# --- server → agent -----------------------------------------------------------------


class AckRange(_Model):
    """Items ``first..last`` (inclusive) of one stream of one store are committed."""

    store: str
    stream: str
    first: int = Field(ge=1)
    last: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> AckRange:
        if self.last < self.first:
            raise ValueError("last must not be below first")
        return self


class ItemProblem(_Model):
    """An item the server could not accept as sent (it is still acknowledged and
    kept raw on the server for inspection, so it never blocks the queue)."""

    stream: str
    seq: int
    error: str


class Reply(_Open):
    """The server's answer to ``batch`` and ``poll``; also the body of MQTT pushes."""

    status: Literal["ok", "suspended", "revoked"] = "ok"
    acked: list[AckRange] = Field(default_factory=list)
    problems: list[ItemProblem] = Field(default_factory=list)
    commands: list[Command] = Field(default_factory=list)
    schedule: Schedule | None = None
    """Sent when the agent's ``schedule_version`` is behind."""
    poll_after_s: int | None = None
    message: str = ""


# --- enrollment ---------------------------------------------------------------------


class EnrollRequest(_Model):
    """Sent once, with a token; ``proof`` signs
    :func:`fleetroom_protocol.keys.enroll_proof_message` with the new signing key."""

    token: Annotated[str, Field(min_length=8, max_length=200)]
    signing_key: str = Field(min_length=40, max_length=60)
    encryption_key: str = Field(min_length=40, max_length=60)
    proof: str = Field(min_length=80, max_length=100)
    hostname: str = Field(default="", max_length=255)
    version: str = Field(default="", max_length=64)
    platform: str = Field(default="", max_length=128)


class MqttSettings(_Model):
    """Broker credentials for one agent (its own user; ACL: only its own topics)."""

    url: str
    """``mqtts://host:8883`` or ``wss://host/mqtt``."""
    username: str
    password: str
    topic_up: str
    topic_down: str


class EnrollResponse(_Model):
    """Everything the agent stores after a successful enrollment."""

    agent_id: str
    tenant: str
    site: str | None = None
    server_signing_key: str
    server_encryption_key: str
    schedule: Schedule = Field(default_factory=Schedule)
    mqtt: MqttSettings | None = None
    mail_to: str | None = None
    """Address of the server's mail intake, if e-mail transport is offered."""

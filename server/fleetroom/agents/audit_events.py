"""The audit events the agents app writes, each with a typed ``data`` model.

Registered in ``AgentsConfig.ready()``.  Ids are the public agent id (text) and
integer row ids; times are ISO strings; no floats (audit data must survive a
``jsonb`` round trip byte-for-byte).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from fleetroom.core.audit import register_action


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenCreated(_Data):
    """agent_token.created"""

    token_id: int
    prefix: str
    label: str
    expires_at: str
    max_uses: int
    source_network: str
    for_agent: str | None = None


class TokenRevoked(_Data):
    """agent_token.revoked"""

    token_id: int
    prefix: str


class TokenRefused(_Data):
    """agent_token.refused: a known token that may not be used (the reuse alert)."""

    token_id: int
    prefix: str
    reason: str
    """``spent`` | ``expired`` | ``revoked`` | ``network`` | ``tenant_inactive`` |
    ``agent_revoked``"""
    uses: int
    max_uses: int


class AgentEnrolled(_Data):
    """agent.enrolled / agent.reenrolled"""

    agent_id: str
    key_id: str
    token_id: int
    token_prefix: str
    hostname: str
    version: str
    platform: str
    old_key_id: str | None = None


class AgentStatusChanged(_Data):
    """agent.suspended / agent.unsuspended / agent.revoked"""

    agent_id: str
    old_status: str
    new_status: str
    reason: str
    violations: int


class PolicyViolation(_Data):
    """agent.policy_violation"""

    agent_id: str
    violation: str
    ctr: int
    transport: str
    source: str
    count: int


class AgentRenamed(_Data):
    """agent.renamed"""

    agent_id: str
    old_name: str
    new_name: str


class ScheduleChanged(_Data):
    """agent.schedule_changed: every field as text (the jitter is a float)."""

    agent_id: str
    version: int
    changes: dict[str, list[str]]
    """field → [old, new]"""


class CommandIssued(_Data):
    """agent.command_issued / agent.command_cancelled"""

    agent_id: str
    command_id: str
    kind: str
    args_json: str
    expires_at: str


class SecurityEventAcknowledged(_Data):
    """agent.security_event_acknowledged"""

    event_id: int
    kind: str


AUDIT_ACTIONS: dict[str, type[BaseModel]] = {
    "agent_token.created": TokenCreated,
    "agent_token.revoked": TokenRevoked,
    "agent_token.refused": TokenRefused,
    "agent.enrolled": AgentEnrolled,
    "agent.reenrolled": AgentEnrolled,
    "agent.suspended": AgentStatusChanged,
    "agent.unsuspended": AgentStatusChanged,
    "agent.revoked": AgentStatusChanged,
    "agent.policy_violation": PolicyViolation,
    "agent.renamed": AgentRenamed,
    "agent.schedule_changed": ScheduleChanged,
    "agent.command_issued": CommandIssued,
    "agent.command_cancelled": CommandIssued,
    "agent.security_event_acknowledged": SecurityEventAcknowledged,
}


def register() -> None:
    """Declare every action above with the audit log."""
    for action, schema in AUDIT_ACTIONS.items():
        register_action(action, schema)

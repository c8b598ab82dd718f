"""Every write of the agents app that is not the ingest of a message itself.

People's actions — ``do_create_enrollment_token``, ``do_revoke_enrollment_token``,
``do_reenroll_agent``, ``do_suspend_agent``, ``do_unsuspend_agent``,
``do_revoke_agent``, ``do_rename_agent``, ``do_set_schedule``, ``do_issue_command``,
``do_cancel_command``, ``do_acknowledge_security_event`` — check ``manage_agents``
on the agent's tenant, write the change and its audit row in one transaction, and
send their signal after commit (architecture rule 4).  The web pages, the REST API
and the CLI all call these.

The agents' own side — :func:`enroll`, :func:`do_record_violation`,
:func:`do_flag_silent_agents` — runs as :data:`~fleetroom.core.scoping.SYSTEM`;
the acting party is the agent, identified by its token or its signature.

Alerts: a refused use of a *known* token (spent, expired, revoked, from outside
its network), every policy violation up to the suspension, the suspension itself
and an agent going silent each write a :class:`~.models.SecurityEvent` (the
to-do list a person works through, until acknowledged) beside the audit row (the
proof), and fire :data:`.signals.security_event` after commit.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from fleetroom_protocol.keys import (
    decode_public_key,
    decode_verify_key,
    encode_key,
    enroll_proof_message,
    key_id,
)
from fleetroom_protocol.messages import EnrollRequest, EnrollResponse, MqttSettings, Schedule
from nacl.exceptions import BadSignatureError
from pydantic import ValidationError as PydanticValidationError

from fleetroom.accounts.models import User
from fleetroom.core import audit
from fleetroom.core.scoping import SYSTEM, SystemActor, require_permission
from fleetroom.tenancy.models import Tenant, TenantKind
from fleetroom.tenancy.permissions import Permission

from . import ratelimit, signals, tokens
from .audit_events import (
    AgentEnrolled,
    AgentRenamed,
    AgentStatusChanged,
    CommandIssued,
    PolicyViolation,
    ScheduleChanged,
    SecurityEventAcknowledged,
    TokenCreated,
    TokenRefused,
    TokenRevoked,
)
from .conf import SUSPEND_AFTER_VIOLATIONS, config
from .keys import server_keys
from .models import (
    COMMAND_OPEN,
    Agent,
    AgentCommand,
    AgentStatus,
    CommandKind,
    CommandStatus,
    EnrollmentToken,
    SecurityEvent,
    SecurityEventKind,
    StatusReason,
    Violation,
)

Actor = User | SystemActor
MANAGE: Final = Permission.MANAGE_AGENTS
AGENT_TENANT_KINDS: Final = frozenset({TenantKind.SITE, TenantKind.CUSTOMER})
MAX_TOKEN_USES: Final = 10_000
MAX_COMMAND_ARGS_BYTES: Final = 4096
DEFAULT_COMMAND_EXPIRY_S: Final = 86400
MIN_SILENCE: Final = timedelta(minutes=15)
SILENCE_POLLS: Final = 3
"""An agent is overdue after missing this many status polls (and at least 15 min)."""


# --- helpers --------------------------------------------------------------------------


def _actor_user(actor: Actor) -> User | None:
    return actor if isinstance(actor, User) else None


def _after_commit(fn: Any, **kwargs: Any) -> None:
    transaction.on_commit(lambda: fn.send_robust(sender=Agent, **kwargs))


def silent_after(since: datetime, schedule: Schedule) -> datetime:
    """When an agent last heard from at ``since`` becomes overdue."""
    return since + max(MIN_SILENCE, timedelta(seconds=SILENCE_POLLS * schedule.status_poll_s))


def _check_agent_tenant(tenant: Tenant) -> None:
    if tenant.kind not in AGENT_TENANT_KINDS:
        raise ValidationError(_("An agent belongs to a site, or to a customer without sites."),
                              code="kind")
    if not tenant.active_in_tree:
        raise ValidationError(_("Nothing can be added below a deactivated tenant."),
                              code="inactive")


def _security_event(tenant: Tenant, kind: SecurityEventKind, *, agent: Agent | None = None,
                    token: EnrollmentToken | None = None, detail: Mapping[str, Any] | None = None,
                    source: str = "") -> SecurityEvent:
    event = SecurityEvent.objects.create(tenant=tenant, kind=kind, agent=agent, token=token,
                                         detail=dict(detail or {}), source=source[:200],
                                         created_at=timezone.now())
    transaction.on_commit(lambda: signals.security_event.send_robust(sender=SecurityEvent,
                                                                     event=event))
    return event


# --- enrollment tokens ---------------------------------------------------------------


def do_create_enrollment_token(tenant: Tenant, *, acting_user: Actor, label: str = "",
                               expires_at: datetime | None = None, max_uses: int = 1,
                               source_network: str = "", for_agent: Agent | None = None,
                               request: HttpRequest | None = None,
                               ) -> tuple[EnrollmentToken, str]:
    """A new token for ``tenant`` (a site, or a customer without sites) and its clear
    text, which is returned this once and never stored.

    Default lifetime ``[agents] token_default_hours`` (24 h), at most
    ``token_max_days``; 1..10,000 uses; ``source_network`` an optional CIDR the
    enrolling agent must connect from.
    """
    _check_agent_tenant(tenant)
    require_permission(acting_user, MANAGE, tenant)
    cfg = config()
    now = timezone.now()
    if expires_at is None:
        expires_at = now + timedelta(hours=cfg.token_default_hours)
    if expires_at <= now or expires_at > now + timedelta(days=cfg.token_max_days):
        raise ValidationError(
            _("An enrollment token must expire within %(days)d days."), code="expiry",
            params={"days": cfg.token_max_days})
    if not 1 <= max_uses <= MAX_TOKEN_USES:
        raise ValidationError(_("An enrollment token can be used between 1 and %(max)d times."),
                              code="max_uses", params={"max": MAX_TOKEN_USES})
    try:
        network = tokens.clean_network(source_network)
    except ValueError:
        raise ValidationError(_("Enter a network such as 192.0.2.0/24 (host bits zero)."),
                              code="network") from None
    label = " ".join(label.split())[:200]
    clear = tokens.new_token()
    with transaction.atomic():
        token = EnrollmentToken.objects.create(
            tenant=tenant, prefix=tokens.token_prefix(clear), token_hash=tokens.token_hash(clear),
            label=label, expires_at=expires_at, max_uses=max_uses, source_network=network,
            for_agent=for_agent, created_by=_actor_user(acting_user))
        audit.record("agent_token.created", tenant=tenant, actor=acting_user, target=token,
                     request=request,
                     data=TokenCreated(token_id=token.pk, prefix=token.prefix, label=label,
                                       expires_at=expires_at.isoformat(), max_uses=max_uses,
                                       source_network=network,
                                       for_agent=for_agent.public_id if for_agent else None))
    return token, clear


def do_revoke_enrollment_token(token: EnrollmentToken, *, acting_user: Actor,
                               request: HttpRequest | None = None) -> EnrollmentToken:
    """Stop a token from enrolling anything (agents already enrolled stay)."""
    require_permission(acting_user, MANAGE, token.tenant)
    with transaction.atomic():
        t = EnrollmentToken.objects.select_for_update().get(pk=token.pk)
        if t.revoked_at is None:
            t.revoked_at = timezone.now()
            t.revoked_by = _actor_user(acting_user)
            t.save(update_fields=["revoked_at", "revoked_by"])
            audit.record("agent_token.revoked", tenant=t.tenant, actor=acting_user, target=t,
                         request=request, data=TokenRevoked(token_id=t.pk, prefix=t.prefix))
    token.revoked_at, token.revoked_by = t.revoked_at, t.revoked_by
    return t


def token_state(token: EnrollmentToken, now: datetime | None = None) -> str:
    """``usable`` | ``revoked`` | ``expired`` | ``spent`` (for lists and checks)."""
    now = now or timezone.now()
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.uses >= token.max_uses:
        return "spent"
    return "usable"


# --- enrollment ----------------------------------------------------------------------


class EnrollmentRefused(Exception):
    """Enrollment did not happen; ``code`` and ``status`` for the wire, ``message`` for
    people (translated)."""

    def __init__(self, code: str, message: str | Promise, status: int,
                 retry_after: float | None = None) -> None:
        super().__init__(str(message))
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


REFUSALS: Final[dict[str, tuple[Promise, int]]] = {
    "invalid_key": (_("The public keys in the request are not valid."), 400),
    "bad_proof": (_("The proof of key possession does not verify."), 400),
    "invalid_token": (_("This enrollment token is not valid."), 403),
    "spent": (_("This enrollment token has been used up."), 403),
    "expired": (_("This enrollment token has expired."), 403),
    "revoked": (_("This enrollment token has been revoked."), 403),
    "network": (_("This enrollment token may not be used from this network."), 403),
    "tenant_inactive": (_("The customer or site of this token is deactivated."), 403),
    "agent_revoked": (_("The agent this token re-enrolls has been revoked."), 403),
    "key_in_use": (_("This key is already enrolled; generate new keys."), 409),
    "rate_limited": (_("Too many failed enrollment attempts. Try again later."), 429),
}
ALERTING: Final = frozenset({"spent", "expired", "revoked", "network", "agent_revoked"})
"""Refusals of a known token that raise a security event (a token is being reused)."""


def _refuse(code: str, retry_after: float | None = None) -> EnrollmentRefused:
    message, status = REFUSALS[code]
    return EnrollmentRefused(code, message, status, retry_after)


def _verify_proof(req: EnrollRequest) -> None:
    try:
        verify_key = decode_verify_key(req.signing_key)
        decode_public_key(req.encryption_key)
    except ValueError:
        raise _refuse("invalid_key") from None
    try:
        proof = base64.b64decode(req.proof, validate=True)
        verify_key.verify(enroll_proof_message(req.token, req.signing_key, req.encryption_key),
                          proof)
    except (binascii.Error, ValueError, BadSignatureError):
        raise _refuse("bad_proof") from None


@dataclass(frozen=True, slots=True)
class _Refusal:
    code: str
    token: EnrollmentToken | None


def _attempt_enroll(req: EnrollRequest, source_ip: str | None,
                    ) -> tuple[Agent, EnrollResponse] | _Refusal:
    now = timezone.now()
    with transaction.atomic(durable=True):
        token = (EnrollmentToken.objects.select_for_update()
                 .filter(token_hash=tokens.token_hash(req.token)).first())
        if token is None:
            return _Refusal("invalid_token", None)
        state = token_state(token, now)
        if state != "usable":
            return _Refusal(state, token)
        if not tokens.in_network(source_ip, token.source_network):
            return _Refusal("network", token)
        tenant = Tenant.objects.get(pk=token.tenant_id)
        if not tenant.active_in_tree or tenant.kind not in AGENT_TENANT_KINDS:
            return _Refusal("tenant_inactive", token)
        new_key_id = key_id(decode_verify_key(req.signing_key))
        if Agent.objects.filter(key_id=new_key_id).exists():
            return _Refusal("key_in_use", token)
        old_key_id: str | None = None
        if token.for_agent_id is not None:
            agent = Agent.objects.select_for_update().get(pk=token.for_agent_id)
            if agent.status == AgentStatus.REVOKED:
                return _Refusal("agent_revoked", token)
            old_key_id = agent.key_id
        else:
            agent = Agent(tenant=tenant, schedule=Schedule(version=1).model_dump(mode="json"),
                          schedule_version=1, created_by_id=token.created_by_id)
        schedule = agent.schedule_model()
        agent.hostname = req.hostname
        agent.version = req.version
        agent.platform = req.platform
        agent.name = agent.name or req.hostname or f"agent-{agent.public_id[:8]}"
        agent.signing_key = req.signing_key
        agent.encryption_key = req.encryption_key
        agent.key_id = new_key_id
        agent.status = AgentStatus.ACTIVE
        agent.status_reason = StatusReason.NONE
        agent.status_changed_at = now
        agent.replay_state = ""
        agent.recent_envelopes = ""
        agent.policy_violations = 0
        agent.last_violation = ""
        agent.enrolled_at = now
        agent.enrolled_via = token
        agent.silent_after = silent_after(now, schedule)
        agent.overdue_since = None
        agent.save()
        EnrollmentToken.objects.filter(pk=token.pk).update(uses=F("uses") + 1, last_used_at=now)
        action = "agent.reenrolled" if old_key_id else "agent.enrolled"
        audit.record(action, tenant=tenant, actor=None, target=agent, ip=source_ip or "",
                     data=AgentEnrolled(agent_id=agent.public_id, key_id=agent.key_id,
                                        token_id=token.pk, token_prefix=token.prefix,
                                        hostname=agent.hostname, version=agent.version,
                                        platform=agent.platform, old_key_id=old_key_id))
        keys = server_keys()
        extras: dict[str, Any] = {}
        for _receiver, result in signals.enroll_extras.send(sender=Agent, agent=agent):
            if isinstance(result, Mapping):
                extras.update(result)
        mqtt = extras.get("mqtt")
        mail_to = extras.get("mail_to")
        response = EnrollResponse(
            agent_id=agent.public_id, tenant=tenant.name,
            site=tenant.name if tenant.kind == TenantKind.SITE else None,
            server_signing_key=encode_key(keys.verify_key),
            server_encryption_key=encode_key(keys.public_key),
            schedule=schedule,
            mqtt=mqtt if isinstance(mqtt, MqttSettings) else None,
            mail_to=mail_to if isinstance(mail_to, str) else None)
        _after_commit(signals.agent_changed, agent=agent,
                      change="reenrolled" if old_key_id else "enrolled")
    return agent, response


def enroll(req: EnrollRequest, source_ip: str | None) -> EnrollResponse:
    """Register a new agent (or new keys for one, with a re-enrollment token).

    Checks, in order: the address is not locked out by failed attempts; the keys
    decode and ``proof`` signs :func:`fleetroom_protocol.keys.enroll_proof_message`
    with the new signing key (so nobody can enroll a key they do not hold); the
    token exists, is not revoked, expired or used up, and the address is inside its
    source network; the tenant is active; the key was never enrolled before.
    A refused *known* token writes an audit row and a security event (reuse
    alert).  Raises :class:`EnrollmentRefused`; every refusal counts toward the
    address's ``enroll_failure_rate``.  Do not call it inside a transaction: the
    enrollment and a refusal's alert must each commit on their own.
    """
    source = source_ip or "-"
    rate = config().enroll_failure_rate
    wait = ratelimit.blocked("enroll", source, rate)
    if wait is not None:
        raise _refuse("rate_limited", wait)
    try:
        _verify_proof(req)
        outcome = _attempt_enroll(req, source_ip)
    except EnrollmentRefused:
        ratelimit.hit("enroll", source, rate)
        raise
    if isinstance(outcome, tuple):
        return outcome[1]
    ratelimit.hit("enroll", source, rate)
    token = outcome.token
    if token is not None and outcome.code in ALERTING:
        with transaction.atomic(durable=True):
            audit.record("agent_token.refused", tenant=token.tenant, actor=None, target=token,
                         ip=source_ip or "",
                         data=TokenRefused(token_id=token.pk, prefix=token.prefix,
                                           reason=outcome.code, uses=token.uses,
                                           max_uses=token.max_uses))
            kind = (SecurityEventKind.TOKEN_NETWORK if outcome.code == "network"
                    else SecurityEventKind.TOKEN_REUSE)
            _security_event(token.tenant, kind, token=token, agent=token.for_agent,
                            detail={"reason": outcome.code, "prefix": token.prefix,
                                    "hostname": req.hostname[:100]},
                            source=source)
    raise _refuse(outcome.code)


def do_reenroll_agent(agent: Agent, *, acting_user: Actor, expires_at: datetime | None = None,
                      source_network: str = "", request: HttpRequest | None = None,
                      ) -> tuple[EnrollmentToken, str]:
    """A one-use token that gives ``agent`` new keys when used (``fleetroom-agent enroll
    --token …`` on its machine).  Enrolling with it resets the replay window and the
    policy-violation count and lifts a suspension; until then the agent stays as it is.
    A revoked agent cannot be re-enrolled (enroll a new one)."""
    if agent.status == AgentStatus.REVOKED:
        raise ValidationError(_("A revoked agent cannot be re-enrolled."), code="revoked")
    return do_create_enrollment_token(agent.tenant, acting_user=acting_user,
                                      label=str(_("Re-enroll %(name)s") % {"name": agent}),
                                      expires_at=expires_at, max_uses=1,
                                      source_network=source_network, for_agent=agent,
                                      request=request)


# --- agent status --------------------------------------------------------------------


def _change_status(agent: Agent, new: AgentStatus, reason: StatusReason, action: str,
                   actor: Actor, request: HttpRequest | None, change: str) -> Agent:
    require_permission(actor, MANAGE, agent.tenant)
    with transaction.atomic():
        a = Agent.objects.select_for_update().get(pk=agent.pk)
        if a.status == AgentStatus.REVOKED and new != AgentStatus.REVOKED:
            raise ValidationError(_("A revoked agent stays revoked."), code="revoked")
        if a.status == new:
            return a
        old = a.status
        a.status, a.status_reason, a.status_changed_at = new, reason, timezone.now()
        fields = ["status", "status_reason", "status_changed_at"]
        if new == AgentStatus.ACTIVE:
            a.policy_violations = 0
            fields.append("policy_violations")
        a.save(update_fields=fields)
        audit.record(action, tenant=a.tenant, actor=actor, target=a, request=request,
                     data=AgentStatusChanged(agent_id=a.public_id, old_status=old,
                                             new_status=new, reason=reason,
                                             violations=a.policy_violations))
        if new == AgentStatus.REVOKED:
            now = timezone.now()
            EnrollmentToken.objects.filter(for_agent=a, revoked_at__isnull=True).update(
                revoked_at=now, revoked_by=_actor_user(actor))
            AgentCommand.objects.filter(agent=a, status__in=COMMAND_OPEN).update(
                status=CommandStatus.CANCELLED)
        _after_commit(signals.agent_changed, agent=a, change=change)
    return a


def do_suspend_agent(agent: Agent, *, acting_user: Actor,
                     request: HttpRequest | None = None) -> Agent:
    """Refuse the agent's traffic until it is un-suspended or re-enrolled (its data
    stays buffered on its machine)."""
    return _change_status(agent, AgentStatus.SUSPENDED, StatusReason.ADMIN, "agent.suspended",
                          acting_user, request, "suspended")


def do_unsuspend_agent(agent: Agent, *, acting_user: Actor,
                       request: HttpRequest | None = None) -> Agent:
    """Accept the agent's traffic again with its current keys and a clean violation
    count (use :func:`do_reenroll_agent` instead when its key may be compromised)."""
    return _change_status(agent, AgentStatus.ACTIVE, StatusReason.NONE, "agent.unsuspended",
                          acting_user, request, "unsuspended")


def do_revoke_agent(agent: Agent, *, acting_user: Actor,
                    request: HttpRequest | None = None) -> Agent:
    """Refuse the agent for good; its open commands are cancelled and its
    re-enrollment tokens revoked.  What it sent stays."""
    return _change_status(agent, AgentStatus.REVOKED, StatusReason.ADMIN, "agent.revoked",
                          acting_user, request, "revoked")


def do_rename_agent(agent: Agent, name: str, *, acting_user: Actor,
                    request: HttpRequest | None = None) -> Agent:
    """Give the agent a name people recognise."""
    clean = " ".join(name.split())
    if not clean:
        raise ValidationError(_("Enter a name."), code="required")
    if len(clean) > 200:
        raise ValidationError(_("A name may have at most 200 characters."), code="too_long")
    require_permission(acting_user, MANAGE, agent.tenant)
    with transaction.atomic():
        a = Agent.objects.select_for_update().get(pk=agent.pk)
        if a.name == clean:
            return a
        old, a.name = a.name, clean
        a.save(update_fields=["name"])
        audit.record("agent.renamed", tenant=a.tenant, actor=acting_user, target=a,
                     request=request,
                     data=AgentRenamed(agent_id=a.public_id, old_name=old, new_name=clean))
    return a


def do_set_schedule(agent: Agent, schedule: Schedule | Mapping[str, Any], *,
                    acting_user: Actor, request: HttpRequest | None = None) -> Agent:
    """Change when the agent works.  The version is bumped here (whatever ``schedule``
    says); the agent receives the new schedule with its next reply, because its
    reported ``schedule_version`` is then behind."""
    try:
        data = schedule.model_dump() if isinstance(schedule, Schedule) else dict(schedule)
        data.pop("version", None)
        new = Schedule.model_validate(data)
    except PydanticValidationError as exc:
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
        raise ValidationError(_("The schedule is not valid (%(fields)s)."), code="schedule",
                              params={"fields": fields}) from None
    require_permission(acting_user, MANAGE, agent.tenant)
    with transaction.atomic():
        a = Agent.objects.select_for_update().get(pk=agent.pk)
        old = a.schedule_model()
        changes = {k: [str(v), str(getattr(new, k))] for k, v in old.model_dump().items()
                   if k != "version" and getattr(new, k) != v}
        if not changes:
            return a
        a.schedule_version = a.schedule_version + 1
        stored = new.model_copy(update={"version": a.schedule_version})
        a.schedule = stored.model_dump(mode="json")
        if a.last_seen is not None:
            a.silent_after = max(silent_after(a.last_seen, stored),
                                 silent_after(timezone.now(), stored))
        a.save(update_fields=["schedule", "schedule_version", "silent_after"])
        audit.record("agent.schedule_changed", tenant=a.tenant, actor=acting_user, target=a,
                     request=request,
                     data=ScheduleChanged(agent_id=a.public_id, version=a.schedule_version,
                                          changes=changes))
    return a


# --- commands ------------------------------------------------------------------------


def do_issue_command(agent: Agent, kind: str, args: Mapping[str, Any] | None = None, *,
                     acting_user: Actor, expires_in_s: int = DEFAULT_COMMAND_EXPIRY_S,
                     request: HttpRequest | None = None) -> AgentCommand:
    """Queue a command for the agent: it rides on the next reply (or an MQTT push),
    signed by the server, and expires ``expires_in_s`` after issue.  The agent runs
    each command id at most once and never beyond its local policy, and reports the
    result in its ``results`` stream."""
    try:
        kind = CommandKind(kind)
    except ValueError:
        raise ValidationError(_("Unknown command."), code="kind") from None
    if not 60 <= expires_in_s <= 30 * 86400:
        raise ValidationError(_("A command must expire between one minute and 30 days."),
                              code="expiry")
    try:
        args_json = json.dumps(dict(args or {}), sort_keys=True, separators=(",", ":"),
                               allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationError(_("Command arguments must be plain JSON."), code="args") from None
    if len(args_json) > MAX_COMMAND_ARGS_BYTES:
        raise ValidationError(_("Command arguments are too long."), code="args")
    require_permission(acting_user, MANAGE, agent.tenant)
    with transaction.atomic():
        a = Agent.objects.select_for_update().get(pk=agent.pk)
        if a.status != AgentStatus.ACTIVE:
            raise ValidationError(_("Commands can only be sent to an active agent."),
                                  code="inactive")
        now = timezone.now()
        cmd = AgentCommand.objects.create(agent=a, kind=kind, args=json.loads(args_json),
                                          issued_by=_actor_user(acting_user), issued_at=now,
                                          expires_at=now + timedelta(seconds=expires_in_s))
        audit.record("agent.command_issued", tenant=a.tenant, actor=acting_user, target=cmd,
                     request=request,
                     data=CommandIssued(agent_id=a.public_id, command_id=cmd.command_id,
                                        kind=kind, args_json=args_json,
                                        expires_at=cmd.expires_at.isoformat()))
        transaction.on_commit(lambda: signals.command_issued.send_robust(sender=Agent,
                                                                         command=cmd))
    return cmd


def do_cancel_command(command: AgentCommand, *, acting_user: Actor,
                      request: HttpRequest | None = None) -> AgentCommand:
    """Withdraw a command that has no result yet (an agent that already received it may
    still run it; its result is recorded all the same)."""
    agent = command.agent
    require_permission(acting_user, MANAGE, agent.tenant)
    with transaction.atomic():
        c = AgentCommand.objects.select_for_update().get(pk=command.pk)
        if c.status not in COMMAND_OPEN:
            return c
        c.status = CommandStatus.CANCELLED
        c.save(update_fields=["status"])
        audit.record("agent.command_cancelled", tenant=agent.tenant, actor=acting_user,
                     target=c, request=request,
                     data=CommandIssued(agent_id=agent.public_id, command_id=c.command_id,
                                        kind=c.kind,
                                        args_json=json.dumps(c.args, sort_keys=True,
                                                             separators=(",", ":")),
                                        expires_at=c.expires_at.isoformat()))
    return c


# --- security events and policy ------------------------------------------------------


def do_acknowledge_security_event(event: SecurityEvent, *, acting_user: Actor,
                                  request: HttpRequest | None = None) -> SecurityEvent:
    """Mark an alert as seen (it stays in the list of all events and in the audit log)."""
    require_permission(acting_user, MANAGE, event.tenant)
    with transaction.atomic():
        e = SecurityEvent.objects.select_for_update().get(pk=event.pk)
        if e.acknowledged_at is None:
            e.acknowledged_at = timezone.now()
            e.acknowledged_by = _actor_user(acting_user)
            e.save(update_fields=["acknowledged_at", "acknowledged_by"])
            audit.record("agent.security_event_acknowledged", tenant=e.tenant,
                         actor=acting_user, target=e, request=request,
                         data=SecurityEventAcknowledged(event_id=e.pk, kind=e.kind))
    return e


def do_record_violation(agent: Agent, violation: Violation, *, ctr: int, transport: str,
                        source: str) -> Agent:
    """Count one validly signed request that broke policy; the fifth suspends the agent.

    Only requests whose signature verified with the agent's current key get here,
    so nobody without that key can get an agent suspended.  Each violation up to
    the suspension is audited and listed as a security event; later ones (a
    suspended agent that keeps sending) only raise the count, so a silent
    machine cannot flood the audit log.  Commits on its own: a refused request
    must still leave its mark.
    """
    with transaction.atomic(durable=True):
        a = Agent.objects.select_for_update().select_related("tenant").get(pk=agent.pk)
        now = timezone.now()
        a.policy_violations += 1
        a.last_violation, a.last_violation_at = violation, now
        fields = ["policy_violations", "last_violation", "last_violation_at"]
        count = a.policy_violations
        if count <= SUSPEND_AFTER_VIOLATIONS:
            audit.record("agent.policy_violation", tenant=a.tenant, actor=None, target=a,
                         data=PolicyViolation(agent_id=a.public_id, violation=violation,
                                              ctr=ctr, transport=transport[:16],
                                              source=source[:200], count=count))
            _security_event(a.tenant, SecurityEventKind.POLICY_VIOLATION, agent=a,
                            detail={"violation": str(violation), "ctr": ctr, "count": count,
                                    "transport": transport[:16]}, source=source)
        if count >= SUSPEND_AFTER_VIOLATIONS and a.status == AgentStatus.ACTIVE:
            a.status, a.status_reason, a.status_changed_at = (
                AgentStatus.SUSPENDED, StatusReason.POLICY, now)
            fields += ["status", "status_reason", "status_changed_at"]
            audit.record("agent.suspended", tenant=a.tenant, actor=None, target=a,
                         data=AgentStatusChanged(agent_id=a.public_id, old_status="active",
                                                 new_status="suspended", reason="policy",
                                                 violations=count))
            _security_event(a.tenant, SecurityEventKind.AGENT_SUSPENDED, agent=a,
                            detail={"violations": count, "last": str(violation)},
                            source=source)
            _after_commit(signals.agent_changed, agent=a, change="suspended")
        a.save(update_fields=fields)
    return a


def do_flag_silent_agents(now: datetime | None = None) -> int:
    """Mark active agents whose ``silent_after`` has passed as not reporting.

    One security event per agent and silence (``overdue_since`` is cleared by its
    next request, so the next silence raises a new one).
    """
    now = now or timezone.now()
    flagged = 0
    ids = list(Agent.objects.filter(status=AgentStatus.ACTIVE, silent_after__lt=now,
                                    overdue_since__isnull=True)
               .order_by("pk").values_list("pk", flat=True)[:1000])
    for pk in ids:
        with transaction.atomic():
            a = Agent.objects.select_for_update().select_related("tenant").get(pk=pk)
            if (a.overdue_since is not None or a.silent_after is None
                    or a.silent_after >= now):
                continue
            a.overdue_since = now
            a.save(update_fields=["overdue_since"])
            _security_event(a.tenant, SecurityEventKind.AGENT_SILENT, agent=a,
                            detail={"last_seen": a.last_seen.isoformat() if a.last_seen
                                    else None})
            _after_commit(signals.agent_silent, agent=a)
            flagged += 1
    return flagged


CLAIM_DETAIL_DEVICES: Final = 20
"""Devices named in a device-claim event's detail (the count covers the rest)."""


def do_note_device_claims(agent: Agent, devices: list[str]) -> SecurityEvent:
    """An agent's readings named devices registered with another dealer (refused by
    ingest, see :meth:`fleetroom.fleet.services._Chunk._may_take`): one open security
    event per agent, counted up while nobody has acknowledged it, so an agent that
    reads the same foreign printer every three hours does not flood the list."""
    with transaction.atomic():
        open_event = (SecurityEvent.objects.select_for_update()
                      .filter(agent=agent, kind=SecurityEventKind.DEVICE_CLAIMED,
                              acknowledged_at__isnull=True).order_by("-pk").first())
        if open_event is None:
            return _security_event(agent.tenant, SecurityEventKind.DEVICE_CLAIMED, agent=agent,
                                   detail={"devices": devices[:CLAIM_DETAIL_DEVICES],
                                           "count": len(devices)})
        named = list(open_event.detail.get("devices", []))
        named += [d for d in devices if d not in named]
        open_event.detail = {"devices": named[:CLAIM_DETAIL_DEVICES],
                             "count": int(open_event.detail.get("count", 0)) + len(devices),
                             "last_at": timezone.now().isoformat()}
        open_event.save(update_fields=["detail"])
        return open_event


__all__ = [
    "ALERTING",
    "REFUSALS",
    "SYSTEM",
    "EnrollmentRefused",
    "do_acknowledge_security_event",
    "do_cancel_command",
    "do_create_enrollment_token",
    "do_flag_silent_agents",
    "do_issue_command",
    "do_note_device_claims",
    "do_record_violation",
    "do_reenroll_agent",
    "do_rename_agent",
    "do_revoke_agent",
    "do_revoke_enrollment_token",
    "do_set_schedule",
    "do_suspend_agent",
    "do_unsuspend_agent",
    "enroll",
    "silent_after",
    "token_state",
]

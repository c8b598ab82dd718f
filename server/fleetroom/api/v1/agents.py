"""Agents and enrollment tokens: the same reads and actions as the agents pages.

Permissions and scope are the pages': agents and their commands need
``view_fleet`` to be seen (404 otherwise, like an id that does not exist); every
change needs ``manage_agents`` on the agent's tenant (403 when the agent is visible
but not the caller's to change).  Enrollment tokens are about who may connect:
they are listed and revoked only where the caller manages agents.  Every change
goes through :mod:`fleetroom.agents.services` (permission checked again, audit row
written); what a service refuses answers 409 (the agent's state forbids it) or
422 (the values are not acceptable), with the service's reason as ``code``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, F, Q, QuerySet
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from fleetroom_protocol.messages import AgentState, Schedule
from ninja import Path, Query, Router, Schema, Status
from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from fleetroom.accounts.models import User
from fleetroom.agents import display, selectors, services
from fleetroom.agents.conf import config
from fleetroom.agents.forms import schedule_bounds
from fleetroom.agents.models import Agent, AgentCommand, EnrollmentToken
from fleetroom.core.scoping import get_object_or_404_scoped, has_permission
from fleetroom.tenancy.models import Tenant
from fleetroom.tenancy.permissions import Permission

from ..pagination import paginate
from ..schemas import NO_NUL, ErrorOut, Id, Page, PageParams, TenantRef, Text, _storable_text
from .common import ERRORS, acting_user, tenant_ref

router = Router(tags=["agents"])
VIEW = Permission.VIEW_FLEET
MANAGE = Permission.MANAGE_AGENTS

WRITE_ERRORS: Final[dict[int, Any]] = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut,
                                       404: ErrorOut, 409: ErrorOut, 422: ErrorOut,
                                       429: ErrorOut}
"""What a change may answer besides success."""
CONFLICT_CODES: Final = frozenset({"inactive", "revoked"})
"""Service refusals caused by the agent's state (409) rather than the values (422)."""

AgentId = Annotated[str, StringConstraints(
    pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), Field(
    description="The agent id (a lower-case UUID), as shown on its page.")]
CommandId = Annotated[str, StringConstraints(
    pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
ShortText = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL),
                      AfterValidator(_storable_text)]
Network = Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL),
                    AfterValidator(_storable_text)]
AgentStatusName = Literal["active", "suspended", "revoked"]
TokenStateName = Literal["usable", "revoked", "expired", "spent"]
CommandKindName = Literal["scan-now", "read-device", "update-profiles", "set-schedule",
                          "diagnostics"]
CommandStatusName = Literal["pending", "delivered", "done", "failed", "refused", "expired",
                            "cancelled"]


def _aware(value: datetime | None) -> datetime | None:
    """A time the agent reported without a zone is UTC (as the protocol says)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- schemas ---------------------------------------------------------------------------


class ScheduleOut(Schema):
    """When the agent works (seconds; ``profile_check`` is the agent's local time)."""

    version: int = Field(description="Raised by every change; the agent reports the "
                                      "version it uses in state.schedule_version.")
    status_poll_s: int
    meter_read_s: int
    month_end_read: bool = Field(description="An extra meter read at every month's end.")
    rediscovery_s: int
    profile_check: str = Field(description="HH:MM, the daily device-profile check.")
    command_poll_s: int
    jitter: float = Field(description="Spread of the intervals (fraction, 0–0.5).")


def _bounded(name: str, description: str) -> Any:
    low, high = schedule_bounds(name)
    return Field(None, ge=low, le=high, description=f"{description} ({low}–{high}).")


class ScheduleIn(Schema):
    """A schedule change: the fields given replace the current ones, the rest stay.
    The limits are the agent protocol's."""

    model_config = ConfigDict(extra="forbid")

    status_poll_s: int | None = _bounded("status_poll_s", "Status poll interval in seconds")
    meter_read_s: int | None = _bounded(
        "meter_read_s", "Meter read interval in seconds, 3 hours up to quarterly")
    month_end_read: bool | None = Field(None, description="Extra read at every month's end.")
    rediscovery_s: int | None = _bounded("rediscovery_s", "Device discovery interval")
    profile_check: str | None = Field(None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                                      description="HH:MM, agent's local time.")
    command_poll_s: int | None = _bounded("command_poll_s", "Command poll interval")
    jitter: float | None = Field(None, ge=0, le=0.5, description="Spread (0–0.5).")


class AgentStateOut(Schema):
    """The state the agent reported with its last message."""

    version: str
    hostname: str
    platform: str
    queue_items: int = Field(description="Outbox items not yet acknowledged by the server.")
    queue_bytes: int
    oldest_unsent_at: datetime | None
    last_ack_at: datetime | None
    last_error: str | None
    devices: int
    weak_crypto_devices: list[str] = Field(
        description="Devices read with SNMPv1/v2c, or v3 without privacy or with MD5/SHA-1/DES.")
    profiles_version: int | None
    schedule_version: int
    transport: str


class AgentOut(Schema):
    """An agent as listed."""

    id: str = Field(description="The agent id (a UUID), as on the wire.")
    name: str
    hostname: str
    version: str
    platform: str
    tenant: TenantRef = Field(description="The site (or customer) it reports for.")
    status: AgentStatusName
    status_reason: Literal["", "policy", "admin"] = Field(
        description="Why it is not active: 'policy' (too many requests that broke policy) "
                    "or 'admin'.")
    status_changed_at: datetime | None
    last_seen: datetime | None
    last_transport: str
    overdue: bool = Field(description="Active, and not heard from for longer than its "
                                      "schedule allows.")
    overdue_after: datetime | None = Field(
        description="When it counts as overdue unless it is heard from again.")
    queue_items: int
    queue_bytes: int
    oldest_unsent_at: datetime | None
    gaps: int = Field(description="Gap records: data the agent reported it could not keep.")
    clock_skew_s: float | None = Field(
        description="Agent clock minus server clock at its last request, in seconds.")
    clock_skew_flagged: bool = Field(
        description=f"True when the clock is off by more than {int(display.SKEW_WARN_S)} s.")
    weak_crypto_devices: int
    enrolled_at: datetime | None


class AgentDetailOut(AgentOut):
    """One agent with its reported state, schedule and counts."""

    state: AgentStateOut
    schedule: ScheduleOut
    policy_violations: int
    last_violation: str
    last_violation_at: datetime | None
    missing_items: int = Field(description="Items missing according to its gap records.")
    open_commands: int
    item_problems: int = Field(description="Items acknowledged but not storable as data.")
    pending_batches: int


class AgentPage(Page):
    """A page of agents."""

    items: list[AgentOut]


class AgentFilters(Schema):
    """Filters of the agent list."""

    status: AgentStatusName | None = Field(None, description="Only agents in this status.")
    overdue: bool | None = Field(
        None, description="true: only agents not reporting on schedule; false: the others.")
    tenant: Id | None = Field(None, description="Only agents of this node and below it.")
    q: Text | None = Field(None, description="Part of the name, host name, version or id.")


class CommandOut(Schema):
    """A command for an agent and what became of it."""

    id: str
    kind: CommandKindName
    args: dict[str, Any]
    status: CommandStatusName
    issued_at: datetime
    issued_by: str | None = Field(description="User name of who issued it.")
    expires_at: datetime
    delivered_at: datetime | None
    deliveries: int
    result_at: datetime | None
    result_detail: str
    result_data: dict[str, Any]


class CommandPage(Page):
    """A page of commands, newest first."""

    items: list[CommandOut]


def _expires_in() -> Any:
    return Field(services.DEFAULT_COMMAND_EXPIRY_S, ge=60, le=30 * 86400,
                 description="Seconds until the command expires unanswered.")


class SimpleCommandIn(Schema):
    """Scan now, update the device profiles, or collect a diagnostics bundle."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["scan-now", "update-profiles", "diagnostics"]
    expires_in_s: int = _expires_in()


class ReadDeviceCommandIn(Schema):
    """Read one device now; ``target`` must lie inside the agent's local allowlist (the
    agent refuses it otherwise and reports so)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["read-device"]
    target: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL),
                      AfterValidator(_storable_text)] = Field(
        description="IP address, host name or host:port.")
    expires_in_s: int = _expires_in()


CommandIn = Annotated[SimpleCommandIn | ReadDeviceCommandIn, Field(discriminator="kind")]
"""A command, told apart by ``kind``."""


class EnrollmentTokenOut(Schema):
    """An enrollment token (never the token itself after creation)."""

    id: int
    prefix: str = Field(description="The token's non-secret beginning.")
    label: str
    tenant: TenantRef
    state: TokenStateName
    expires_at: datetime
    max_uses: int
    uses: int
    source_network: str = Field(description="CIDR the enrolling agent must connect from; "
                                            "'' for any.")
    for_agent: str | None = Field(description="The agent a re-enrollment token re-keys.")
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class EnrollmentTokenCreatedOut(EnrollmentTokenOut):
    """A new token: ``token`` is shown this once; store it like a password."""

    token: str
    command: str = Field(description="The command an installer runs on the agent's machine.")


class EnrollmentTokenPage(Page):
    """A page of tokens, newest first."""

    items: list[EnrollmentTokenOut]


class EnrollmentTokenFilters(Schema):
    """Filters of the token list."""

    tenant: Id | None = Field(None, description="Only tokens of this node and below it.")
    usable: bool | None = Field(None, description="true: only tokens that can still enroll.")


class EnrollmentTokenIn(Schema):
    """A new token for a site, or a customer without sites."""

    model_config = ConfigDict(extra="forbid")

    tenant: Id = Field(description="The site (or customer) agents enrolled with it report for.")
    label: ShortText = ""
    expires_in_hours: int | None = Field(
        None, ge=1, le=config().token_max_days * 24,
        description=f"Lifetime (default {config().token_default_hours} hours).")
    max_uses: int = Field(1, ge=1, le=services.MAX_TOKEN_USES,
                          description="How many agents may enroll with it.")
    source_network: Network = Field("", description="Optional CIDR, e.g. 192.0.2.0/24.")


class ReenrollIn(Schema):
    """A one-use token that gives an existing agent new keys."""

    model_config = ConfigDict(extra="forbid")

    expires_in_hours: int | None = Field(
        None, ge=1, le=config().token_max_days * 24,
        description=f"Lifetime (default {config().token_default_hours} hours).")
    source_network: Network = Field("", description="Optional CIDR, e.g. 192.0.2.0/24.")


# --- converters ------------------------------------------------------------------------


def _agent_fields(a: Agent, s: display.AgentSummary) -> dict[str, Any]:
    return {
        "id": a.public_id, "name": a.name, "hostname": a.hostname, "version": a.version,
        "platform": a.platform, "tenant": tenant_ref(a.tenant), "status": a.status,
        "status_reason": a.status_reason, "status_changed_at": a.status_changed_at,
        "last_seen": a.last_seen, "last_transport": a.last_transport, "overdue": s.overdue,
        "overdue_after": a.silent_after if a.status == "active" else None,
        "queue_items": s.state.queue_items, "queue_bytes": s.state.queue_bytes,
        "oldest_unsent_at": _aware(s.state.oldest_unsent_at), "gaps": s.gaps,
        "clock_skew_s": a.clock_skew_s, "clock_skew_flagged": s.skew_flag,
        "weak_crypto_devices": s.weak_crypto, "enrolled_at": a.enrolled_at,
    }


def _state_out(state: AgentState) -> AgentStateOut:
    return AgentStateOut(
        version=state.version, hostname=state.hostname, platform=state.platform,
        queue_items=state.queue_items, queue_bytes=state.queue_bytes,
        oldest_unsent_at=_aware(state.oldest_unsent_at), last_ack_at=_aware(state.last_ack_at),
        last_error=state.last_error, devices=state.devices,
        weak_crypto_devices=list(state.weak_crypto_devices),
        profiles_version=state.profiles_version, schedule_version=state.schedule_version,
        transport=state.transport)


def _schedule(a: Agent) -> Schedule:
    try:
        return a.schedule_model()
    except ValueError:
        return Schedule(version=a.schedule_version)


def agent_detail_out(a: Agent) -> AgentDetailOut:
    """An agent with everything the detail page shows."""
    now = timezone.now()
    s = display.summarise(a, now=now)
    ov = selectors.overview(a, now)
    return AgentDetailOut(
        **_agent_fields(a, s), state=_state_out(s.state),
        schedule=ScheduleOut(**_schedule(a).model_dump()),
        policy_violations=a.policy_violations, last_violation=a.last_violation,
        last_violation_at=a.last_violation_at, missing_items=ov.missing_items,
        open_commands=ov.open_commands, item_problems=ov.item_problems,
        pending_batches=ov.pending_batches)


def command_out(c: AgentCommand) -> CommandOut:
    """One command."""
    return CommandOut(
        id=c.command_id, kind=c.kind, args=c.args if isinstance(c.args, dict) else {},  # type: ignore[arg-type]
        status=c.status, issued_at=c.issued_at,  # type: ignore[arg-type]
        issued_by=c.issued_by.get_username() if c.issued_by else None,
        expires_at=c.expires_at, delivered_at=c.delivered_at, deliveries=c.deliveries,
        result_at=c.result_at, result_detail=c.result_detail,
        result_data=c.result_data if isinstance(c.result_data, dict) else {})


def token_fields(t: EnrollmentToken, now: datetime | None = None) -> dict[str, Any]:
    """A token's public fields (never its hash)."""
    return {
        "id": t.pk, "prefix": t.prefix, "label": t.label, "tenant": tenant_ref(t.tenant),
        "state": services.token_state(t, now), "expires_at": t.expires_at,
        "max_uses": t.max_uses, "uses": t.uses, "source_network": t.source_network,
        "for_agent": t.for_agent.public_id if t.for_agent else None,
        "created_at": t.created_at,
        "created_by": t.created_by.get_username() if t.created_by else None,
        "last_used_at": t.last_used_at, "revoked_at": t.revoked_at,
    }


def _created(t: EnrollmentToken, clear: str) -> Status[EnrollmentTokenCreatedOut]:
    return Status(201, EnrollmentTokenCreatedOut(**token_fields(t), token=clear,
                                                 command=display.enroll_command(clear)))


# --- helpers ---------------------------------------------------------------------------


def _refused(exc: ValidationError | PermissionDenied) -> Status[ErrorOut]:
    """A service's refusal as an error answer."""
    if isinstance(exc, PermissionDenied):
        return Status(403, ErrorOut(detail=str(exc) or _("You do not have permission to do "
                                                         "this."), code="permission_denied",
                                    errors=None))
    code = str(getattr(exc, "code", None) or "invalid")
    status = 409 if code in CONFLICT_CODES else 422
    return Status(status, ErrorOut(detail=" ".join(str(m) for m in exc.messages), code=code,
                                   errors=None))


def _agent(user: User, agent_id: str) -> Agent:
    return selectors.agent(user, agent_id)


def _managed_agent(user: User, agent_id: str) -> Agent:
    """404 when the agent is not visible, 403 when visible but not the caller's to change."""
    agent = _agent(user, agent_id)
    if not has_permission(user, MANAGE, agent.tenant):
        raise PermissionDenied(_("You do not have permission to manage this agent."))
    return agent


def _tenant_to_manage(user: User, pk: int) -> Tenant:
    """A tenant the caller manages agents on: 404 if they cannot see it at all, 403 if
    they see it but do not manage agents there."""
    node = Tenant.objects.for_user(user, MANAGE).filter(pk=pk).first()
    if node is not None:
        return node
    get_object_or_404_scoped(Tenant, user, VIEW, pk=pk)
    raise PermissionDenied(_("You do not have permission to manage agents here."))


def _expiry(hours: int | None) -> datetime | None:
    return timezone.now() + timedelta(hours=hours) if hours is not None else None


def _filtered_agents(user: User, f: AgentFilters) -> QuerySet[Agent]:
    within = None
    if f.tenant is not None:
        within = get_object_or_404_scoped(Tenant, user, VIEW, pk=f.tenant)
    qs = selectors.agents(user, within=within)
    if f.overdue is True:
        qs = qs.filter(selectors.overdue_q())
    elif f.overdue is False:
        qs = qs.exclude(selectors.overdue_q())
    if f.status is not None:
        qs = qs.filter(status=f.status)
    for word in (f.q or "").split():
        qs = qs.filter(Q(name__icontains=word) | Q(hostname__icontains=word)
                       | Q(public_id__icontains=word) | Q(version__icontains=word))
    return qs.annotate(gap_count=Count("gaps", distinct=True))


# --- agents ----------------------------------------------------------------------------


@router.get("/agents", response={200: AgentPage, **ERRORS}, operation_id="listAgents",
            summary="List agents")
def list_agents(request: HttpRequest, filters: Query[AgentFilters],
                page: Query[PageParams]) -> AgentPage:
    """The agents you may see, by customer, site and name: status, last contact,
    version, queue depth, gaps, clock skew, weak SNMP crypto, and whether each reports
    on schedule (``overdue``).  A ``tenant`` outside your access answers 404."""
    user = acting_user(request)
    total, rows = paginate(_filtered_agents(user, filters), page)
    now = timezone.now()
    return AgentPage(count=total, limit=page.limit, offset=page.offset,
                     items=[AgentOut(**_agent_fields(a, display.summarise(a, now=now)))
                            for a in rows])


@router.get("/agents/{agent_id}", response={200: AgentDetailOut, **ERRORS},
            operation_id="getAgent", summary="One agent with its state and schedule")
def get_agent(request: HttpRequest, agent_id: Path[AgentId]) -> AgentDetailOut:
    """An agent's reported state (queue, errors, devices), schedule and counts."""
    return agent_detail_out(_agent(acting_user(request), agent_id))


@router.get("/agents/{agent_id}/commands", response={200: CommandPage, **ERRORS},
            operation_id="listAgentCommands", summary="An agent's commands, newest first")
def list_agent_commands(request: HttpRequest, agent_id: Path[AgentId],
                        page: Query[PageParams]) -> CommandPage:
    """Commands issued to the agent and what became of them."""
    user = acting_user(request)
    agent = _agent(user, agent_id)
    total, rows = paginate(selectors.commands(user, agent=agent), page)
    return CommandPage(count=total, limit=page.limit, offset=page.offset,
                       items=[command_out(c) for c in rows])


@router.post("/agents/{agent_id}/commands",
             response={201: CommandOut, **WRITE_ERRORS}, operation_id="issueAgentCommand",
             summary="Send a command to an agent")
def issue_agent_command(request: HttpRequest, agent_id: Path[AgentId],
                        body: CommandIn) -> Status[CommandOut] | Status[ErrorOut]:
    """Queue a command (scan now, read a device, update profiles, collect diagnostics).

    It rides on the agent's next reply or an MQTT push, signed by the server; the
    agent runs it at most once, never beyond its local allowlist, and reports the
    result (see the command list).  ``read-device`` needs ``target``; the others take
    none.  An agent that is not active answers 409 ``inactive``.
    """
    user = acting_user(request)
    agent = _managed_agent(user, agent_id)
    args = {"target": body.target} if isinstance(body, ReadDeviceCommandIn) else {}
    try:
        cmd = services.do_issue_command(agent, body.kind, args, acting_user=user,
                                        expires_in_s=body.expires_in_s, request=request)
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    return Status(201, command_out(cmd))


@router.patch("/agents/{agent_id}/schedule", response={200: ScheduleOut, **WRITE_ERRORS},
              operation_id="setAgentSchedule", summary="Change an agent's schedule")
def set_agent_schedule(request: HttpRequest, agent_id: Path[AgentId],
                       body: ScheduleIn) -> Status[ScheduleOut] | Status[ErrorOut]:
    """Change when the agent works; fields left out stay as they are.  The agent
    receives the new schedule (with a raised ``version``) with its next reply."""
    user = acting_user(request)
    agent = _managed_agent(user, agent_id)
    changes = {k: v for k, v in body.model_dump().items() if v is not None}
    try:
        updated = services.do_set_schedule(agent, {**_schedule(agent).model_dump(), **changes},
                                           acting_user=user, request=request)
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    return Status(200, ScheduleOut(**_schedule(updated).model_dump()))


def _status_change(request: HttpRequest, agent_id: str, action: Any,
                   ) -> Status[AgentDetailOut] | Status[ErrorOut]:
    user = acting_user(request)
    agent = _managed_agent(user, agent_id)
    try:
        action(agent, acting_user=user, request=request)
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    return Status(200, agent_detail_out(_agent(user, agent_id)))


@router.post("/agents/{agent_id}/suspend", response={200: AgentDetailOut, **WRITE_ERRORS},
             operation_id="suspendAgent", summary="Suspend an agent")
def suspend_agent(request: HttpRequest,
                  agent_id: Path[AgentId]) -> Status[AgentDetailOut] | Status[ErrorOut]:
    """Refuse the agent's traffic until it is un-suspended or re-enrolled (its data stays
    buffered on its machine).  A revoked agent answers 409 ``revoked``."""
    return _status_change(request, agent_id, services.do_suspend_agent)


@router.post("/agents/{agent_id}/unsuspend", response={200: AgentDetailOut, **WRITE_ERRORS},
             operation_id="unsuspendAgent", summary="Accept a suspended agent again")
def unsuspend_agent(request: HttpRequest,
                    agent_id: Path[AgentId]) -> Status[AgentDetailOut] | Status[ErrorOut]:
    """Accept the agent again with its current keys and a clean violation count (re-enroll
    it instead when its key may be compromised).  A revoked agent answers 409."""
    return _status_change(request, agent_id, services.do_unsuspend_agent)


@router.post("/agents/{agent_id}/revoke", response={200: AgentDetailOut, **WRITE_ERRORS},
             operation_id="revokeAgent", summary="Revoke an agent for good")
def revoke_agent(request: HttpRequest,
                 agent_id: Path[AgentId]) -> Status[AgentDetailOut] | Status[ErrorOut]:
    """Refuse the agent for good; its open commands are cancelled and its re-enrollment
    tokens revoked.  What it sent stays."""
    return _status_change(request, agent_id, services.do_revoke_agent)


@router.post("/agents/{agent_id}/reenroll",
             response={201: EnrollmentTokenCreatedOut, **WRITE_ERRORS},
             operation_id="reenrollAgent", summary="A token that gives an agent new keys")
def reenroll_agent(request: HttpRequest, agent_id: Path[AgentId], body: ReenrollIn,
                   ) -> Status[EnrollmentTokenCreatedOut] | Status[ErrorOut]:
    """A one-use token, returned this once: enrolling with it on the agent's machine
    gives the agent new keys, lifts a suspension and resets its violation count.  A
    revoked agent answers 409 ``revoked``."""
    user = acting_user(request)
    agent = _managed_agent(user, agent_id)
    try:
        token, clear = services.do_reenroll_agent(
            agent, acting_user=user, expires_at=_expiry(body.expires_in_hours),
            source_network=body.source_network, request=request)
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    return _created(token, clear)


# --- enrollment tokens -----------------------------------------------------------------


@router.get("/enrollment-tokens", response={200: EnrollmentTokenPage, **ERRORS},
            operation_id="listEnrollmentTokens", summary="Enrollment tokens you manage")
def list_enrollment_tokens(request: HttpRequest, filters: Query[EnrollmentTokenFilters],
                           page: Query[PageParams]) -> EnrollmentTokenPage:
    """Tokens on the sites and customers where you manage agents, newest first (prefix
    and state, never the token).  A ``tenant`` outside your access answers 404."""
    user = acting_user(request)
    within = None
    if filters.tenant is not None:
        within = get_object_or_404_scoped(Tenant, user, VIEW, pk=filters.tenant)
    qs = selectors.enrollment_tokens(user, within=within, usable_only=filters.usable is True)
    if filters.usable is False:
        qs = qs.exclude(revoked_at__isnull=True, expires_at__gt=timezone.now(),
                        uses__lt=F("max_uses"))
    total, rows = paginate(qs, page)
    now = timezone.now()
    return EnrollmentTokenPage(count=total, limit=page.limit, offset=page.offset,
                               items=[EnrollmentTokenOut(**token_fields(t, now))
                                      for t in rows])


@router.post("/enrollment-tokens", response={201: EnrollmentTokenCreatedOut, **WRITE_ERRORS},
             operation_id="createEnrollmentToken", summary="Create an enrollment token")
def create_enrollment_token(request: HttpRequest, body: EnrollmentTokenIn,
                            ) -> Status[EnrollmentTokenCreatedOut] | Status[ErrorOut]:
    """A new token for a site (or a customer without sites), returned this once with the
    command an installer runs: ``fleetroom-agent enroll --server … --token …``.  Only its
    hash is stored.  Refusals: 422 ``kind`` (not a site or customer), ``expiry``,
    ``max_uses``, ``network`` (not a CIDR with zero host bits)."""
    user = acting_user(request)
    tenant = _tenant_to_manage(user, body.tenant)
    try:
        token, clear = services.do_create_enrollment_token(
            tenant, acting_user=user, label=body.label,
            expires_at=_expiry(body.expires_in_hours), max_uses=body.max_uses,
            source_network=body.source_network, request=request)
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    return _created(token, clear)


@router.delete("/enrollment-tokens/{token_id}", response={204: None, **WRITE_ERRORS},
               operation_id="revokeEnrollmentToken", summary="Revoke an enrollment token")
def revoke_enrollment_token(request: HttpRequest,
                            token_id: Path[Id]) -> Status[None] | Status[ErrorOut]:
    """Stop the token from enrolling anything (agents enrolled with it stay).  Revoking
    a revoked token succeeds too."""
    user = acting_user(request)
    token = selectors.enrollment_tokens(user).filter(pk=token_id).first()
    if token is None:
        raise Http404(_("Not found."))
    try:
        services.do_revoke_enrollment_token(token, acting_user=user, request=request)
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    return Status(204, None)

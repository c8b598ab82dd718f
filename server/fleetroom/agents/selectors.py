"""Reads of the agents app, through the tenant scope (architecture rule 5).

People's reads take the acting ``user``: agents, their commands, gaps and item
problems need ``view_fleet``; enrollment tokens and security events need
``manage_agents`` (they are about who may connect).  No membership means nothing.
The unscoped helpers at the end serve the transports (mail intake) and operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, F, Min, Q, QuerySet, Sum
from django.utils import timezone
from fleetroom_protocol.keys import decode_public_key
from nacl.public import PublicKey

from fleetroom.core.scoping import get_object_or_404_scoped
from fleetroom.tenancy.models import Tenant
from fleetroom.tenancy.permissions import Permission

from .models import (
    COMMAND_OPEN,
    Agent,
    AgentCommand,
    AgentGap,
    AgentStatus,
    EnrollmentToken,
    ItemState,
    ReceivedBatch,
    ReceivedItem,
    SecurityEvent,
)

VIEW = Permission.VIEW_FLEET
MANAGE = Permission.MANAGE_AGENTS


def _within(qs: QuerySet[Any], within: Tenant | None, field: str = "tenant") -> QuerySet[Any]:
    return qs if within is None else qs.filter(**{f"{field}__path__startswith": within.path})


def agents(user: Any, *, within: Tenant | None = None,
           permission: Permission = VIEW) -> QuerySet[Agent]:
    """Agents ``user`` may see, optionally only below ``within``."""
    qs = _within(Agent.objects.for_user(user, permission), within)
    return qs.select_related("tenant", "tenant__parent").order_by("tenant__path", "name", "pk")


def agent(user: Any, public_id: str, *, permission: Permission = VIEW) -> Agent:
    """One agent by its public id; 404 when missing or out of scope."""
    return get_object_or_404_scoped(Agent.objects.select_related("tenant"), user, permission,
                                    public_id=public_id)


def is_overdue(a: Agent, now: datetime | None = None) -> bool:
    """True when an active agent has not been heard from within its schedule."""
    now = now or timezone.now()
    return (a.status == AgentStatus.ACTIVE and a.silent_after is not None
            and a.silent_after < now)


def overdue_q(now: datetime | None = None) -> Q:
    """The database form of :func:`is_overdue` (for filtering and excluding)."""
    return Q(status=AgentStatus.ACTIVE, silent_after__lt=now or timezone.now())


def overdue_agents(user: Any, *, within: Tenant | None = None,
                   now: datetime | None = None) -> QuerySet[Agent]:
    """Active agents not heard from for 3 status-poll intervals (at least 15 min)."""
    return agents(user, within=within).filter(overdue_q(now))


@dataclass(frozen=True, slots=True)
class AgentOverview:
    """What the agent list and detail pages show beside the model's own fields."""

    overdue: bool
    queue_items: int
    queue_bytes: int
    oldest_unsent_at: str | None
    last_ack_at: str | None
    last_error: str | None
    devices: int
    weak_crypto_devices: list[str]
    gaps: int
    missing_items: int
    open_commands: int
    item_problems: int
    pending_batches: int


def overview(a: Agent, now: datetime | None = None) -> AgentOverview:
    """The agent's reported state and what the server holds about it (a few counts)."""
    state = a.state_model()
    gap_stats = AgentGap.objects.filter(agent=a).aggregate(n=Count("pk"), missing=Sum("count"))
    return AgentOverview(
        overdue=is_overdue(a, now), queue_items=state.queue_items,
        queue_bytes=state.queue_bytes,
        oldest_unsent_at=state.oldest_unsent_at.isoformat() if state.oldest_unsent_at else None,
        last_ack_at=state.last_ack_at.isoformat() if state.last_ack_at else None,
        last_error=state.last_error, devices=state.devices,
        weak_crypto_devices=list(state.weak_crypto_devices),
        gaps=int(gap_stats["n"] or 0), missing_items=int(gap_stats["missing"] or 0),
        open_commands=AgentCommand.objects.filter(agent=a, status__in=COMMAND_OPEN).count(),
        item_problems=ReceivedItem.objects.filter(agent=a, state=ItemState.PROBLEM).count(),
        pending_batches=ReceivedBatch.objects.filter(agent=a, processed_at__isnull=True).count())


def enrollment_tokens(user: Any, *, within: Tenant | None = None,
                      usable_only: bool = False) -> QuerySet[EnrollmentToken]:
    """Tokens ``user`` may manage (newest first); ``usable_only`` hides revoked,
    expired and used-up ones (see :func:`fleetroom.agents.services.token_state`)."""
    qs = _within(EnrollmentToken.objects.for_user(user, MANAGE), within)
    if usable_only:
        qs = qs.filter(revoked_at__isnull=True, expires_at__gt=timezone.now(),
                       uses__lt=F("max_uses"))
    return qs.select_related("tenant", "for_agent", "created_by").order_by("-created_at", "-pk")


def security_events(user: Any, *, within: Tenant | None = None,
                    open_only: bool = True) -> QuerySet[SecurityEvent]:
    """Agent security alerts (reused tokens, violations, suspensions, silence), newest
    first; ``open_only``: not yet acknowledged."""
    qs = _within(SecurityEvent.objects.for_user(user, MANAGE), within)
    if open_only:
        qs = qs.filter(acknowledged_at__isnull=True)
    return qs.select_related("tenant", "agent", "token").order_by("-created_at", "-pk")


def commands(user: Any, *, agent: Agent | None = None,
             open_only: bool = False) -> QuerySet[AgentCommand]:
    """Commands ``user`` may see, newest first."""
    qs = AgentCommand.objects.for_user(user, VIEW)
    if agent is not None:
        qs = qs.filter(agent=agent)
    if open_only:
        qs = qs.filter(status__in=COMMAND_OPEN)
    return qs.select_related("agent", "issued_by").order_by("-issued_at", "-pk")


def gaps(user: Any, *, agent: Agent | None = None) -> QuerySet[AgentGap]:
    """Gap records (data an agent could not keep), newest first."""
    qs = AgentGap.objects.for_user(user, VIEW)
    if agent is not None:
        qs = qs.filter(agent=agent)
    return qs.select_related("agent").order_by("-received_at", "-pk")


def item_problems(user: Any, *, agent: Agent | None = None) -> QuerySet[ReceivedItem]:
    """Items acknowledged but not stored as data (invalid reading, unknown stream …)."""
    qs = ReceivedItem.objects.for_user(user, VIEW).filter(state=ItemState.PROBLEM)
    if agent is not None:
        qs = qs.filter(agent=agent)
    return qs.select_related("agent").order_by("-received_at", "-pk")


# --- unscoped: transports and operations ------------------------------------------------


def agent_encryption_key(agent_id: str) -> PublicKey | None:
    """The registered X25519 key of an agent (``None`` when unknown) — for the mail
    intake, which checks that a part was encrypted by the agent it names."""
    row = Agent.objects.filter(public_id=agent_id).values_list("encryption_key", flat=True)
    key = row.first()
    if key is None:
        return None
    try:
        return decode_public_key(key)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Backlog:
    """Normalisation backlog (operations)."""

    pending_batches: int
    oldest_pending_at: datetime | None


def backlog() -> Backlog:
    """How far normalisation is behind (what the 503 protection looks at)."""
    stats = ReceivedBatch.objects.filter(processed_at__isnull=True).aggregate(
        n=Count("pk"), oldest=Min("received_at"))
    return Backlog(pending_batches=int(stats["n"] or 0), oldest_pending_at=stats["oldest"])


def counts_by_status(user: Any) -> dict[str, int]:
    """Agents per status and overdue, for a dashboard tile."""
    now = timezone.now()
    qs = Agent.objects.for_user(user, VIEW)
    out = {row["status"]: row["n"] for row in
           qs.order_by().values("status").annotate(n=Count("pk"))}
    out["overdue"] = qs.filter(Q(status=AgentStatus.ACTIVE) & Q(silent_after__lt=now)).count()
    return out

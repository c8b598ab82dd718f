"""How an agent is shown to people: one summary the pages, the REST API and
``fleetroom status`` share, so the three never disagree about what "overdue",
"queue depth" or "clock skew too large" mean.

Nothing here writes, and nothing here reads tenant data on its own: callers pass
agents they loaded through :mod:`fleetroom.agents.selectors` (the scope), except
:func:`status_rows`, which serves the operator's command line and sees everything.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from fleetroom_protocol.messages import AgentState
from pydantic import ValidationError as PydanticValidationError

from fleetroom.tenancy.models import Tenant, TenantKind

from .models import Agent, AgentStatus, EnrollmentToken, SecurityEvent, Violation
from .selectors import is_overdue
from .services import REFUSALS, token_state

SKEW_WARN_S: Final = 300.0
"""Clock skew beyond this is flagged.  Authentication never depends on the agent's
clock (counters, not timestamps), but readings are stamped with it, so a clock
five minutes off is worth a look."""

TOKEN_STATES: Final[dict[str, Promise]] = {
    "usable": gettext_lazy("Usable"),
    "revoked": gettext_lazy("Revoked"),
    "expired": gettext_lazy("Expired"),
    "spent": gettext_lazy("Used up"),
}
TOKEN_STATE_CLASS: Final = {"usable": "ok", "revoked": "error", "expired": "unknown",
                            "spent": "unknown"}
STATUS_CLASS: Final[dict[str, str]] = {
    AgentStatus.ACTIVE.value: "ok", AgentStatus.SUSPENDED.value: "warning",
    AgentStatus.REVOKED.value: "error"}


def state_of(agent: Agent) -> AgentState:
    """The agent's last reported state; an empty one if what is stored does not parse
    (a page about the agent must still open)."""
    try:
        return agent.state_model()
    except PydanticValidationError:
        return AgentState()


def duration_text(seconds: int) -> str:
    """``300`` → "5 minutes", ``86400`` → "1 day" (the largest whole unit)."""
    # Literal ngettext calls, so that makemessages finds every form.
    if seconds >= 86400 and seconds % 86400 == 0:
        n = seconds // 86400
        return ngettext("%(n)d day", "%(n)d days", n) % {"n": n}
    if seconds >= 3600 and seconds % 3600 == 0:
        n = seconds // 3600
        return ngettext("%(n)d hour", "%(n)d hours", n) % {"n": n}
    if seconds >= 60 and seconds % 60 == 0:
        n = seconds // 60
        return ngettext("%(n)d minute", "%(n)d minutes", n) % {"n": n}
    return ngettext("%(n)d second", "%(n)d seconds", seconds) % {"n": seconds}


def skew_text(seconds: float | None) -> str:
    """The agent's clock against the server's, in words ("3 minutes ahead")."""
    if seconds is None:
        return "–"
    whole = round(abs(seconds))
    if whole < 1:
        return _("in step")
    amount = duration_text(whole if whole < 120 else (whole // 60) * 60)
    return (_("%(amount)s ahead") if seconds > 0 else _("%(amount)s behind")) % {
        "amount": amount}


def skew_flagged(seconds: float | None) -> bool:
    """True when the clock is off by more than :data:`SKEW_WARN_S`."""
    return seconds is not None and abs(seconds) > SKEW_WARN_S


def customer_and_site(tenant: Tenant) -> tuple[str, str]:
    """(customer name, site name or ``""``) of an agent's or token's tenant."""
    if tenant.kind == TenantKind.SITE and tenant.parent is not None:
        return tenant.parent.name, tenant.name
    return tenant.name, ""


def tenant_label(tenant: Tenant) -> str:
    """"Customer › Site" (or just the customer)."""
    customer, site = customer_and_site(tenant)
    return f"{customer} › {site}" if site else customer


@dataclass(frozen=True, slots=True)
class AgentSummary:
    """One agent as a list row shows it (no query beyond what the caller annotated)."""

    agent: Agent
    state: AgentState
    overdue: bool
    gaps: int
    customer: str
    site: str
    status_class: str
    skew_flag: bool
    skew: str
    weak_crypto: int


def summarise(agent: Agent, *, gaps: int | None = None, now: datetime | None = None,
              ) -> AgentSummary:
    """The row of an agent; ``gaps`` from a ``Count("gaps")`` annotation (else counted)."""
    state = state_of(agent)
    if gaps is None:
        annotated = getattr(agent, "gap_count", None)
        gaps = int(annotated) if annotated is not None else agent.gaps.count()
    customer, site = customer_and_site(agent.tenant)
    return AgentSummary(
        agent=agent, state=state, overdue=is_overdue(agent, now), gaps=gaps,
        customer=customer, site=site, status_class=STATUS_CLASS.get(agent.status, "unknown"),
        skew_flag=skew_flagged(agent.clock_skew_s), skew=skew_text(agent.clock_skew_s),
        weak_crypto=len(state.weak_crypto_devices))


def reason_text(agent: Agent) -> str:
    """Why an agent is not active, for people ("" when it is)."""
    if agent.status == AgentStatus.ACTIVE or not agent.status_reason:
        return ""
    return str(agent.get_status_reason_display())


def extra_state(agent: Agent) -> dict[str, Any]:
    """Fields a newer agent reported that this server does not know (shown as sent)."""
    raw = agent.last_state if isinstance(agent.last_state, dict) else {}
    return {k: v for k, v in sorted(raw.items()) if k not in AgentState.model_fields}


def enroll_command(token: str, server: str | None = None) -> str:
    """The ready-to-copy command an installer runs on the agent's machine."""
    base = (server or settings.FLEETROOM_AGENTS_URL).rstrip("/")
    return shlex.join(["fleetroom-agent", "enroll", "--server", base, "--token", token])


def token_row(token: EnrollmentToken, now: datetime | None = None) -> dict[str, Any]:
    """A token as the list shows it (never its hash)."""
    state = token_state(token, now)
    return {"token": token, "state": state, "state_label": TOKEN_STATES[state],
            "state_class": TOKEN_STATE_CLASS[state], "tenant": tenant_label(token.tenant)}


_DETAIL_LABELS: Final[dict[str, Promise]] = {
    "reason": gettext_lazy("reason"),
    "violation": gettext_lazy("violation"),
    "count": gettext_lazy("count"),
    "violations": gettext_lazy("violations"),
    "last": gettext_lazy("last violation"),
    "ctr": gettext_lazy("message counter"),
    "transport": gettext_lazy("transport"),
    "hostname": gettext_lazy("host name"),
    "prefix": gettext_lazy("token"),
    "last_seen": gettext_lazy("last seen"),
    "devices": gettext_lazy("devices"),
    "last_at": gettext_lazy("last time"),
}
_VIOLATIONS: Final = dict(Violation.choices)


def _detail_value(key: str, value: Any) -> str:
    if key in ("violation", "last") and value in _VIOLATIONS:
        return str(_VIOLATIONS[value])
    if key == "reason" and value in REFUSALS:
        return str(REFUSALS[value][0])
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def event_details(event: SecurityEvent) -> list[tuple[str, str]]:
    """The particulars of a security event as (label, text) pairs, for people."""
    detail = event.detail if isinstance(event.detail, dict) else {}
    return [(str(_DETAIL_LABELS.get(k, k)), _detail_value(k, v))
            for k, v in sorted(detail.items())]


def status_rows(now: datetime | None = None) -> list[dict[str, Any]]:
    """Every agent for ``fleetroom status --json`` (operators see all tenants)."""
    now = now or timezone.now()
    rows = []
    qs = (Agent.objects.select_related("tenant", "tenant__parent")
          .annotate(gap_count=Count("gaps")).order_by("tenant__path", "name", "pk"))
    for a in qs:
        s = summarise(a, gaps=int(a.gap_count), now=now)
        rows.append({
            "id": a.public_id, "name": str(a), "tenant": tenant_label(a.tenant),
            "tenant_id": a.tenant_id, "status": a.status,
            "last_seen": a.last_seen.isoformat() if a.last_seen else None,
            "version": a.version or s.state.version, "queue_depth": s.state.queue_items,
            "oldest_unsent_at": (s.state.oldest_unsent_at.isoformat()
                                 if s.state.oldest_unsent_at else None),
            "gaps": s.gaps, "overdue": s.overdue, "clock_skew_s": a.clock_skew_s,
        })
    return rows

"""Agents pages: the list, one agent (state, schedule, commands, gaps, alerts),
enrollment tokens and security events.  Mounted at ``agents/``.

Rules every view here keeps (checked by ``server/tests/test_agents_matrix.py``):

* Login required; tenant data only through :mod:`fleetroom.agents.selectors`, so an
  agent, token or event outside the scope is a 404 exactly like a missing one.
  Agents need ``view_fleet`` to be seen; changing one needs ``manage_agents`` on its
  tenant (403 when the agent is visible but not theirs to change).  Tokens and
  security events are about who may connect: they need ``manage_agents`` to be seen
  at all, and their list pages answer 403 to someone who holds it nowhere.
* Every change is a CSRF-checked POST that calls one service (which checks the
  permission again and writes the audit row).  What a service refuses is shown as a
  message or on the form, never as an error page.
* A new enrollment token is rendered once, in the POST response, marked
  ``no-store``; it is never put into the session, a URL or a log.
* Complete without JavaScript; with htmx the list filters swap only the table.
  No inline script or style (CSP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from fleetroom_protocol.messages import AgentState, Schedule
from pydantic import ValidationError as PydanticValidationError

from fleetroom.core.scoping import has_permission, scope
from fleetroom.core.views_support import (
    flash_refusal,
    login_required,
    no_store,
    paginate,
    posted_data,
    refusal_messages,
    render_form_page,
    render_fragment_or_page,
    signed_in_user,
    vary_on_htmx,
)
from fleetroom.tenancy.permissions import Permission

from . import display, processing, selectors, services
from .forms import (
    ISSUABLE,
    AgentFilterForm,
    CommandForm,
    ConfirmForm,
    EnrollmentTokenForm,
    ReenrollForm,
    RenameForm,
    ScheduleForm,
)
from .models import COMMAND_OPEN, Agent, AgentCommand, AgentStatus, CommandKind

VIEW = Permission.VIEW_FLEET
MANAGE = Permission.MANAGE_AGENTS
PAGE_SIZE = 50
RECENT = 20
"""Rows of commands, gaps, item problems and events on the agent page."""
RESULTS_TARGET = "agent-results"


# --- helpers ---------------------------------------------------------------------------


def _require_manage_somewhere(user: Any) -> None:
    """403 for a page about a permission the user holds nowhere (no object involved)."""
    if scope(user, MANAGE).is_empty:
        raise PermissionDenied(_("You do not have permission to manage agents."))


def _agent(request: HttpRequest, agent_id: UUID) -> Agent:
    """The agent if the user may see it (404 otherwise)."""
    return selectors.agent(request.user, str(agent_id))


def _managed_agent(request: HttpRequest, agent_id: UUID) -> Agent:
    """The agent if the user may change it: 404 when invisible, 403 when only visible."""
    agent = _agent(request, agent_id)
    if not has_permission(request.user, MANAGE, agent.tenant):
        raise PermissionDenied(_("You do not have permission to manage this agent."))
    return agent


def _detail(agent: Agent, anchor: str = "") -> str:
    url = reverse("agents:agent_detail", args=[agent.public_id])
    return f"{url}#{anchor}" if anchor else url


def _schedule(agent: Agent) -> Schedule:
    try:
        return agent.schedule_model()
    except PydanticValidationError:
        return Schedule(version=agent.schedule_version)


def _subnav(request: HttpRequest, here: str) -> list[dict[str, Any]]:
    """Agents, tokens, security events — the last two only for those who manage agents."""
    user = request.user
    items: list[tuple[str, str, int | None]] = [("agents:agent_list", _("Agents"), None)]
    if not scope(user, MANAGE).is_empty:
        open_events = selectors.security_events(user).count()
        items += [("agents:token_list", _("Enrollment tokens"), None),
                  ("agents:security_events", _("Security events"), open_events)]
    return [{"url": reverse(name), "label": label, "count": count, "active": name == here}
            for name, label, count in items]


# --- the list --------------------------------------------------------------------------


def _filtered_agents(user: Any, q: str, status: str, overdue: bool) -> QuerySet[Agent]:
    qs = selectors.overdue_agents(user) if overdue else selectors.agents(user)
    if status:
        qs = qs.filter(status=status)
    for word in q.split():
        qs = qs.filter(Q(name__icontains=word) | Q(hostname__icontains=word)
                       | Q(public_id__icontains=word) | Q(version__icontains=word)
                       | Q(tenant__name__icontains=word))
    return qs.annotate(gap_count=Count("gaps", distinct=True))


@require_GET
@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    """Agents in scope: status, last contact, version, queue, gaps, clock, weak SNMP
    crypto, and whether each reports on schedule.  Filter by status or overdue."""
    user = request.user
    form = AgentFilterForm(request.GET)
    q, status, overdue = form.values()
    page = paginate(request, _filtered_agents(user, q, status, overdue), PAGE_SIZE)
    now = timezone.now()
    params = {k: v for k, v in (("q", q), ("status", status), ("overdue", "on" if overdue
                                                                  else "")) if v}
    base = reverse("agents:agent_list")
    pages = {}
    if page.has_previous():
        pages["previous"] = f"{base}?{urlencode({**params, 'page': page.previous_page_number()})}"
    if page.has_next():
        pages["next"] = f"{base}?{urlencode({**params, 'page': page.next_page_number()})}"
    counts = selectors.counts_by_status(user)
    context = {
        "form": form, "q": q, "status": status, "overdue": overdue, "page": page,
        "rows": [display.summarise(a, now=now) for a in page.object_list], "pages": pages,
        "status_options": AgentStatus.choices, "results_target": RESULTS_TARGET,
        "counts": counts, "subnav": _subnav(request, "agents:agent_list"),
        "can_enroll": not scope(user, MANAGE).is_empty,
        "skew_warn_min": int(display.SKEW_WARN_S // 60),
    }
    return render_fragment_or_page(request, context, page="agents/agent_list.html",
                                   fragment="agents/_agent_results.html", target=RESULTS_TARGET)


# --- one agent -------------------------------------------------------------------------


def _state_facts(state: AgentState) -> list[tuple[str, Any, str]]:
    """(label, value, kind) of the reported state; kind tells the template how to show it."""
    return [
        (_("Agent version"), state.version, "text"),
        (_("Host name"), state.hostname, "text"),
        (_("Platform"), state.platform, "text"),
        (_("Items waiting to be sent"), state.queue_items, "number"),
        (_("Size of the queue"), state.queue_bytes, "bytes"),
        (_("Oldest unsent item"), state.oldest_unsent_at, "time"),
        (_("Last acknowledgement"), state.last_ack_at, "time"),
        (_("Last error"), state.last_error, "text"),
        (_("Devices"), state.devices, "number"),
        (_("Device profiles version"), state.profiles_version, "text"),
        (_("Schedule version in use"), state.schedule_version, "text"),
        (_("Transport"), state.transport, "text"),
    ]


@require_GET
@login_required
def agent_detail(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Everything about one agent in scope (404 otherwise); forms for the actions when the
    user manages agents on its tenant."""
    user = request.user
    agent = _agent(request, agent_id)
    now = timezone.now()
    can_manage = has_permission(user, MANAGE, agent.tenant)
    summary = display.summarise(agent, now=now)
    schedule = _schedule(agent)
    events = (list(selectors.security_events(user, open_only=False).filter(agent=agent)
                   [:RECENT]) if can_manage else [])
    context = {
        "agent": agent, "s": summary, "overview": selectors.overview(agent, now),
        "reason": display.reason_text(agent), "state_facts": _state_facts(summary.state),
        "extra_state": display.extra_state(agent),
        "schedule": schedule,
        "schedule_rows": [
            (_("Status poll"), _("every %(t)s") % {
                "t": display.duration_text(schedule.status_poll_s)}),
            (_("Meter reads"), _("every %(t)s") % {
                "t": display.duration_text(schedule.meter_read_s)}),
            (_("Month-end read"), _("yes") if schedule.month_end_read else _("no")),
            (_("Rediscovery"), _("every %(t)s") % {
                "t": display.duration_text(schedule.rediscovery_s)}),
            (_("Profile check"), schedule.profile_check),
            (_("Command poll"), _("every %(t)s") % {
                "t": display.duration_text(schedule.command_poll_s)}),
        ],
        "schedule_pending": summary.state.schedule_version < agent.schedule_version,
        "commands": list(selectors.commands(user, agent=agent)[:RECENT]),
        "open_statuses": [s.value for s in COMMAND_OPEN],
        "gaps": list(selectors.gaps(user, agent=agent)[:RECENT]),
        "problems": list(selectors.item_problems(user, agent=agent)[:RECENT]),
        "events": [{"event": e, "details": display.event_details(e)} for e in events],
        "can_manage": can_manage,
        "active": agent.status == AgentStatus.ACTIVE,
        "schedule_form": ScheduleForm(current=schedule) if can_manage else None,
        "quick_commands": [k for k in ISSUABLE if k != CommandKind.READ_DEVICE],
        "subnav": _subnav(request, ""),
    }
    return vary_on_htmx(render(request, "agents/agent_detail.html", context))


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def agent_schedule(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Change when the agent works (the protocol's limits apply); the agent receives the
    new schedule with its next reply."""
    agent = _managed_agent(request, agent_id)
    form = ScheduleForm(posted_data(request), current=_schedule(agent))
    if request.method == "POST" and form.is_valid():
        try:
            services.do_set_schedule(agent, form.schedule, acting_user=signed_in_user(request),
                                     request=request)
        except (ValidationError, PermissionDenied) as exc:
            form.add_error(None, refusal_messages(exc))
        else:
            messages.success(request, _("The schedule was saved. The agent receives it with "
                                        "its next contact."))
            return redirect(_detail(agent, "schedule"))
    return render_form_page(request, form, title=_("Schedule of %(name)s") % {"name": agent},
                            submit=_("Save schedule"), back=_detail(agent, "schedule"),
                            status=400 if form.errors else 200)


@require_POST
@login_required
def agent_command(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Queue a command; it rides on the agent's next reply (or an MQTT push)."""
    agent = _managed_agent(request, agent_id)
    form = CommandForm(request.POST)
    if form.is_valid():
        try:
            cmd = services.do_issue_command(agent, form.cleaned_data["kind"], form.args(),
                                            acting_user=signed_in_user(request), request=request)
        except (ValidationError, PermissionDenied) as exc:
            form.add_error(None, refusal_messages(exc))
        else:
            messages.success(request, _("“%(command)s” was queued for the agent.") % {
                "command": cmd.get_kind_display()})
            return redirect(_detail(agent, "commands"))
    return render_form_page(request, form, title=_("Command for %(name)s") % {"name": agent},
                            submit=_("Send command"), back=_detail(agent, "commands"), status=400)


@require_POST
@login_required
def command_cancel(request: HttpRequest, agent_id: UUID, command_id: UUID) -> HttpResponse:
    """Withdraw a command that has no result yet."""
    agent = _managed_agent(request, agent_id)
    command: AgentCommand = get_object_or_404(selectors.commands(request.user, agent=agent),
                                              command_id=str(command_id))
    try:
        services.do_cancel_command(command, acting_user=signed_in_user(request), request=request)
    except (ValidationError, PermissionDenied) as exc:
        flash_refusal(request, exc)
    else:
        messages.success(request, _("The command was cancelled."))
    return redirect(_detail(agent, "commands"))


@require_POST
@login_required
def problem_retry(request: HttpRequest, agent_id: UUID, item_id: int) -> HttpResponse:
    """File the problem items of an item's batch again from the stored envelope —
    after the cause is gone (a deactivated tenant reactivated, a device of another
    dealer moved here by the operator).  Runs now, so the answer says what happened."""
    agent = _managed_agent(request, agent_id)
    item = get_object_or_404(selectors.item_problems(request.user, agent=agent), pk=item_id)
    batch = item.batch
    if batch is None:
        messages.error(request, _("The received batch of this item has been deleted after "
                                  "its retention period; it cannot be filed again."))
        return redirect(_detail(agent, "problems"))
    try:
        report = processing.do_reprocess_batch(batch, acting_user=signed_in_user(request),
                                               request=request)
    except (ValidationError, PermissionDenied) as exc:
        flash_refusal(request, exc)
        return redirect(_detail(agent, "problems"))
    if report is None:
        messages.info(request, _("The batch is being filed by the worker right now."))
        return redirect(_detail(agent, "problems"))
    stored = ngettext("Filed again: %(count)d reading stored.",
                      "Filed again: %(count)d readings stored.",
                      report.readings_stored) % {"count": report.readings_stored}
    if report.readings_duplicate:
        stored += " " + ngettext("%(count)d reading was stored before.",
                                 "%(count)d readings were stored before.",
                                 report.readings_duplicate) % {
                                     "count": report.readings_duplicate}
    if report.problems:
        left = ngettext("%(count)d item still has a problem.",
                        "%(count)d items still have problems.",
                        len(report.problems)) % {"count": len(report.problems)}
        messages.warning(request, f"{stored} {left}")
    else:
        messages.success(request, stored)
    return redirect(_detail(agent, "problems"))


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def agent_rename(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Give the agent a name people recognise."""
    agent = _managed_agent(request, agent_id)
    form = RenameForm(posted_data(request), initial={"name": agent.name})
    if request.method == "POST" and form.is_valid():
        try:
            services.do_rename_agent(agent, form.cleaned_data["name"],
                                     acting_user=signed_in_user(request), request=request)
        except (ValidationError, PermissionDenied) as exc:
            form.add_error("name", refusal_messages(exc))
        else:
            messages.success(request, _("The agent was renamed."))
            return redirect(_detail(agent))
    return render_form_page(request, form, title=_("Rename %(name)s") % {"name": agent},
                            submit=_("Rename"), back=_detail(agent),
                            status=400 if form.errors else 200)


def _status_action(request: HttpRequest, agent_id: UUID, *, action: Callable[..., Agent],
                   title: str, intro: str, submit: str, done: str,
                   danger: bool = False) -> HttpResponse:
    """Confirmation on GET, the change on POST (one service call)."""
    agent = _managed_agent(request, agent_id)
    form = ConfirmForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            action(agent, acting_user=signed_in_user(request), request=request)
        except (ValidationError, PermissionDenied) as exc:
            flash_refusal(request, exc)
        else:
            messages.success(request, done)
        return redirect(_detail(agent))
    return render_form_page(request, form, title=title % {"name": agent}, intro=intro,
                            submit=submit, back=_detail(agent), danger=danger)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def agent_suspend(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Refuse the agent's traffic until it is un-suspended or re-enrolled."""
    return _status_action(
        request, agent_id, action=services.do_suspend_agent, title=_("Suspend %(name)s"),
        intro=_("The server refuses the agent's messages until you un-suspend or re-enroll "
                "it. Its data stays buffered on its machine meanwhile."),
        submit=_("Suspend"), done=_("The agent was suspended."), danger=True)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def agent_unsuspend(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Accept the agent's traffic again with its current keys."""
    return _status_action(
        request, agent_id, action=services.do_unsuspend_agent,
        title=_("Un-suspend %(name)s"),
        intro=_("The agent is accepted again with its current keys and a clean violation "
                "count. If its key may have been copied, re-enroll it instead."),
        submit=_("Un-suspend"), done=_("The agent is active again."))


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def agent_revoke(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """Refuse the agent for good."""
    return _status_action(
        request, agent_id, action=services.do_revoke_agent, title=_("Revoke %(name)s"),
        intro=_("The agent is refused for good: its open commands are cancelled and it "
                "cannot be re-enrolled. What it sent stays. This cannot be undone."),
        submit=_("Revoke"), done=_("The agent was revoked."), danger=True)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def agent_reenroll(request: HttpRequest, agent_id: UUID) -> HttpResponse:
    """A one-use token that gives the agent new keys; shown once, in the POST response."""
    agent = _managed_agent(request, agent_id)
    form = ReenrollForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            token, clear = services.do_reenroll_agent(
                agent, acting_user=signed_in_user(request),
                source_network=form.cleaned_data["source_network"], request=request)
        except (ValidationError, PermissionDenied) as exc:
            form.add_error(None, refusal_messages(exc))
        else:
            return _token_created(request, token, clear, agent=agent)
    return render_form_page(
        request, form, title=_("Re-enroll %(name)s") % {"name": agent},
        intro=_("You get a one-use token. Running the enroll command with it on the agent's "
                "machine gives the agent new keys, lifts a suspension and resets its "
                "violation count. Until then the agent stays as it is."),
        submit=_("Create re-enrollment token"), back=_detail(agent),
        status=400 if form.errors else 200)


# --- enrollment tokens -----------------------------------------------------------------


def _token_created(request: HttpRequest, token: Any, clear: str,
                   agent: Agent | None = None) -> HttpResponse:
    return no_store(render(request, "agents/token_created.html", {
        "token": token, "clear": clear, "command": display.enroll_command(clear),
        "row": display.token_row(token), "agent": agent}))


@require_GET
@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    """Tokens where the user manages agents (prefix and state, never the token)."""
    user = request.user
    _require_manage_somewhere(user)
    usable_only = request.GET.get("show") == "usable"
    tokens = selectors.enrollment_tokens(user, usable_only=usable_only)
    page = paginate(request, tokens.select_related("tenant__parent"), PAGE_SIZE)
    now = timezone.now()
    return render(request, "agents/token_list.html", {
        "page": page, "rows": [display.token_row(t, now) for t in page.object_list],
        "usable_only": usable_only, "page_query": "show=usable&" if usable_only else "",
        "subnav": _subnav(request, "agents:token_list")})


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def token_create(request: HttpRequest) -> HttpResponse:
    """A new token; the response to the POST is the only place it is ever shown."""
    user = signed_in_user(request)
    _require_manage_somewhere(user)
    form = EnrollmentTokenForm(posted_data(request), user=user,
                               initial={"tenant": request.GET.get("tenant")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            token, clear = services.do_create_enrollment_token(
                data["tenant"], acting_user=user, label=data["label"],
                expires_at=data["expires_at"], max_uses=data["max_uses"],
                source_network=data["source_network"], request=request)
        except (ValidationError, PermissionDenied) as exc:
            form.add_error(None, refusal_messages(exc))
        else:
            return _token_created(request, token, clear)
    return render_form_page(
        request, form, title=_("New enrollment token"),
        intro=_("An installer runs the enroll command with this token on the machine the "
                "agent runs on. The agent makes its keys there; the token is shown only "
                "once."),
        submit=_("Create token"), back=reverse("agents:token_list"),
        status=400 if form.errors else 200)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop a token from enrolling anything (agents already enrolled stay)."""
    token = get_object_or_404(selectors.enrollment_tokens(request.user), pk=pk)
    form = ConfirmForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.do_revoke_enrollment_token(token, acting_user=signed_in_user(request),
                                                request=request)
        except (ValidationError, PermissionDenied) as exc:
            flash_refusal(request, exc)
        else:
            messages.success(request, _("The token was revoked."))
        return redirect("agents:token_list")
    return render_form_page(request, form,
                            title=_("Revoke token %(prefix)s…") % {"prefix": token.prefix},
                            intro=_("Nobody can enroll an agent with it any more. Agents already "
                                    "enrolled with it stay."),
                            submit=_("Revoke"), back=reverse("agents:token_list"), danger=True)


# --- security events -------------------------------------------------------------------


@require_GET
@login_required
def security_events(request: HttpRequest) -> HttpResponse:
    """Reused tokens, policy violations, suspensions, silent agents: open ones first."""
    user = request.user
    _require_manage_somewhere(user)
    show_all = request.GET.get("show") == "all"
    page = paginate(request, selectors.security_events(user, open_only=not show_all),
                    PAGE_SIZE)
    return render(request, "agents/security_events.html", {
        "page": page, "show_all": show_all, "page_query": "show=all&" if show_all else "",
        "rows": [{"event": e, "details": display.event_details(e)} for e in page.object_list],
        "subnav": _subnav(request, "agents:security_events"),
        "here": request.get_full_path()})


@require_POST
@login_required
def security_event_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark an event as seen (it stays in the list of all events and in the audit log)."""
    event = get_object_or_404(selectors.security_events(request.user, open_only=False), pk=pk)
    try:
        services.do_acknowledge_security_event(event, acting_user=signed_in_user(request),
                                               request=request)
    except (ValidationError, PermissionDenied) as exc:
        flash_refusal(request, exc)
    else:
        messages.success(request, _("The event was acknowledged."))
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = reverse("agents:security_events")
    return redirect(target)

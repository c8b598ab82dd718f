"""The agents pages, driven like a person would: the list with what each agent
reported, filters, the agent page with its schedule form (the protocol's limits),
commands and their results, gaps, the status actions, enrollment tokens shown once
and stored hashed, re-enrollment, security events, the menu and ``fleetroom status``.

Expected values come from what the agents sent (``STATES`` in the support module) or
from the database rows the services wrote, never from the page itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from fleetroom.accounts.testing import assert_no_inline_code
from fleetroom.agents import selectors
from fleetroom.agents.models import (
    Agent,
    AgentCommand,
    AgentStatus,
    CommandStatus,
    EnrollmentToken,
    ItemState,
    ReceivedItem,
    SecurityEvent,
    SecurityEventKind,
)
from fleetroom.agents.services import do_issue_command, do_suspend_agent
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM
from fleetroom.core.status import collect_status
from fleetroom_protocol.messages import MAX_METER_READ_S, MIN_METER_READ_S, Schedule

from server.tests.test_agents_support import FakeAgent, enroll_request, post_enroll
from server.tests.test_agents_ui_support import (
    AGENT_TENANT,
    RELATIONS,
    SEES,
    STATES,
    UiWorld,
    build_world,
    client_for,
    command_result,
    element_text,
    gap_record,
    report_state,
    send_items,
    table_rows,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def w() -> UiWorld:
    return build_world()


def detail_url(w: UiWorld, relation: str) -> str:
    return reverse("agents:agent_detail", args=[w.agent(relation).public_id])


def rows_by_host(response) -> dict[str, list[str]]:
    """Agent table rows keyed by the agent's name (first cell's first word)."""
    assert response.status_code == 200, response.status_code
    return {r[0].split()[0]: r for r in table_rows(response.content.decode(), "agents")}


# --- the list --------------------------------------------------------------------------


def test_list_shows_each_agent_in_scope_with_what_it_reported(w):
    response = client_for(w.user("tech")).get(reverse("agents:agent_list"))
    assert_no_inline_code(response.content.decode())
    rows = rows_by_host(response)
    assert set(rows) == {STATES[r].hostname for r in SEES["tech"]}  # Paris is Dealer B's
    berlin = rows["berlin-pc"]
    # Agent, Status, Customer/site, Last seen, Version, Queue, Oldest, Gaps, Clock, Weak
    assert berlin[1] == "Active"
    assert berlin[2] == "Acme › Berlin"
    assert berlin[3] == "now"
    assert berlin[4] == STATES["child"].version
    assert berlin[5] == f"{STATES['child'].queue_items:,}"
    assert "ago" in berlin[6]  # oldest unsent item, reported as 2025-03-01
    assert berlin[7] == "0"
    assert berlin[8] == "12 minutes ahead"  # sealed 12 min ahead: flagged
    assert re.search(r'class="state warning"[^>]*>12 minutes ahead<', response.content.decode())
    assert berlin[9] == str(len(STATES["child"].weak_crypto_devices))
    acme = rows["acme-gw"]
    assert acme[2] == "Acme"  # a customer-level agent has no site
    assert acme[8] == "20 seconds ahead"
    assert acme[9] == "0"
    # The customer's own people see their agents, read-only; nobody sees nothing.
    viewer = rows_by_host(client_for(w.user("viewer")).get(reverse("agents:agent_list")))
    assert set(viewer) == {"acme-gw", "berlin-pc"}
    site_only = rows_by_host(client_for(w.u["berlin_viewer"]).get(reverse("agents:agent_list")))
    assert set(site_only) == {"berlin-pc"}
    assert rows_by_host(client_for(w.user("nobody")).get(reverse("agents:agent_list"))) == {}


def test_filters_status_overdue_and_search(w):
    tech = client_for(w.user("tech"))
    do_suspend_agent(w.agent("sibling"), acting_user=SYSTEM)
    # Time passes for Berlin's agent: its "overdue after" moment lies behind us.
    Agent.objects.filter(pk=w.agent("child").pk).update(
        silent_after=timezone.now() - timedelta(minutes=1))
    url = reverse("agents:agent_list")
    assert set(rows_by_host(tech.get(url, {"status": "suspended"}))) == {"munich-pc"}
    assert set(rows_by_host(tech.get(url, {"status": "active"}))) == {"acme-gw", "berlin-pc"}
    overdue = tech.get(url, {"overdue": "on"})
    assert set(rows_by_host(overdue)) == {"berlin-pc"}
    assert "Overdue" in rows_by_host(overdue)["berlin-pc"][1]
    assert "Not reporting on schedule since" in tech.get(detail_url(w, "child")).content.decode()
    assert "Not reporting on schedule since" not in tech.get(
        detail_url(w, "own")).content.decode()
    suspended = rows_by_host(tech.get(url))["munich-pc"]
    assert suspended[1] == "Suspended By an administrator"
    assert set(rows_by_host(tech.get(url, {"q": "munich"}))) == {"munich-pc"}
    assert set(rows_by_host(tech.get(url, {"q": "Berlin 1.3"}))) == {"berlin-pc"}
    # htmx swaps only the results; the same URL without htmx is the whole page.
    fragment = tech.get(url, {"status": "suspended"},
                        headers={"HX-Request": "true", "HX-Target": "agent-results"})
    assert b"<html" not in fragment.content
    assert set(rows_by_host(fragment)) == {"munich-pc"}
    assert "HX-Request" in fragment["Vary"]
    # A status that does not exist filters nothing (and breaks nothing).
    assert len(rows_by_host(tech.get(url, {"status": "bogus"}))) == 3


# --- one agent -------------------------------------------------------------------------


def test_agent_page_shows_state_schedule_gaps_and_problems(w):
    berlin = w.fake["child"]
    send_items(berlin, "gaps", [gap_record(40, 1, 40), gap_record(2, 41, 42, "store_corrupt")])
    send_items(berlin, "readings", [{"schema": "not-a-reading"}])
    page = client_for(w.user("viewer")).get(detail_url(w, "child"))
    html = page.content.decode()
    assert_no_inline_code(html)
    state = STATES["child"]
    for text in (state.hostname, state.platform, state.last_error, "2.4\xa0MB", "1,234",
                 *state.weak_crypto_devices, "Acme", "Berlin"):
        assert text in html, text
    assert "12 minutes ahead" not in html  # the clock as of its latest message (on time)
    gaps = sorted(r[1:5] for r in table_rows(html, "gaps"))
    assert gaps == [["readings", "disk_budget", "40", "1–40"],
                    ["readings", "store_corrupt", "2", "41–42"]]
    assert "(42 items missing)" in html
    (problem,) = table_rows(html, "problems")  # the item that could not be stored, and why
    assert problem[1] == "readings #1"
    assert problem[2].startswith("unsupported schema 'not-a-reading'")
    # The schedule as stored, read-only for a viewer (no form, no action buttons).
    assert "every 5 minutes" in html
    assert "every 1 day" in html
    assert 'name="status_poll_min"' not in html
    assert reverse("agents:agent_suspend", args=[w.agent("child").public_id]) not in html
    # The list counts the gap records too.
    rows = rows_by_host(client_for(w.user("viewer")).get(reverse("agents:agent_list")))
    assert rows["berlin-pc"][7] == "2"


def test_a_refused_foreign_device_is_filed_again_after_the_operator_moved_it(w):
    """Dealer A's agent (Acme) reads a printer that Dealer B's Paris already has: the
    item is a problem, not a move.  The operator moves the printer to Acme; the
    technician files the batch again from the agent page and the reading is stored."""
    from fleetroom.fleet.models import Device
    from fleetroom.fleet.models import Reading as ReadingRow
    from fleetroom.fleet.services import do_update_device

    from server.tests.test_agents_support import agent_json
    from server.tests.test_fleet_support import SERIAL, recording
    from tests.support.recordings import text

    send_items(w.fake["foreign"], "readings", [agent_json("alerts")])
    serial = text(recording("alerts"), SERIAL)
    device = Device.objects.get(serial=serial)
    assert device.tenant == w.t["paris"]
    later = json.loads(agent_json("alerts"))  # the same printer, read an hour later
    later["taken_at"] = (datetime.fromisoformat(later["taken_at"]) + timedelta(hours=1)
                         ).isoformat()
    send_items(w.fake["own"], "readings", [later])
    tech = client_for(w.user("tech"))
    html = tech.get(detail_url(w, "own")).content.decode()
    (problem,) = table_rows(html, "problems")
    assert "another dealer" in problem[2]
    assert serial in problem[2]
    (item,) = ReceivedItem.objects.filter(agent=w.agent("own"), state=ItemState.PROBLEM)
    retry = reverse("agents:problem_retry", args=[w.agent("own").public_id, item.pk])
    assert retry in html  # the technician manages this agent: the button is there
    assert retry not in client_for(w.user("viewer")).get(detail_url(w, "own")).content.decode()
    # Filing it again before the move changes nothing: still a problem, printer in Paris.
    response = tech.post(retry, follow=True)
    page = response.content.decode()
    assert "Filed again: 0 readings stored. 1 item still has a problem." in page
    device.refresh_from_db()
    assert device.tenant == w.t["paris"]
    do_update_device(device, acting_user=SYSTEM, tenant=w.t["acme"], location=None, tags=[],
                     asset_number="", cost_centre="")
    response = tech.post(retry, follow=True)
    assert "Filed again: 1 reading stored." in response.content.decode()
    item.refresh_from_db()
    assert (item.state, item.error) == (ItemState.DONE, "")
    stored = ReadingRow.objects.get(agent_id=w.agent("own").pk)
    assert (stored.device_id, stored.tenant_id) == (device.pk, w.t["acme"].pk)


def test_commands_issued_on_the_page_reach_the_agent_and_show_their_result(w):
    tech = client_for(w.user("tech"))
    agent = w.agent("child")
    url = reverse("agents:agent_command", args=[agent.public_id])
    assert tech.post(url, {"kind": "scan-now"}).status_code == 302
    response = tech.post(url, {"kind": "read-device", "target": " 10.1.0.5 "})
    assert response.status_code == 302
    issued = list(selectors.commands(w.user("tech"), agent=agent))
    assert [(c.kind, c.args) for c in issued] == [("read-device", {"target": "10.1.0.5"}),
                                                   ("scan-now", {})]
    assert all(c.issued_by == w.user("tech") for c in issued)
    # The agent receives both with its next reply (signed by the server).
    fake = w.fake["child"]
    reply = fake.reply(fake.send(fake.poll()))
    assert {c.id for c in reply.commands} == {c.command_id for c in issued}
    # It reports one result; the page shows it.
    scan = next(c for c in issued if c.kind == "scan-now")
    send_items(fake, "results", [command_result(scan.command_id, "done", "read 17 devices")])
    html = tech.get(detail_url(w, "child")).content.decode()
    row = next(r for r in table_rows(html, "commands") if r[1] == "Scan now")
    assert row[2].startswith("Done")
    assert row[3] == "read 17 devices"
    # Bad input: no address for "read a device", an unknown command.
    before = AgentCommand.objects.count()
    missing = tech.post(url, {"kind": "read-device", "target": "  "})
    assert missing.status_code == 400
    assert "Enter the address of the device to read." in missing.content.decode()
    assert tech.post(url, {"kind": "set-schedule"}).status_code == 400
    assert tech.post(url, {"kind": "rm -rf"}).status_code == 400
    assert AgentCommand.objects.count() == before


def test_an_open_command_can_be_cancelled_and_a_suspended_agent_gets_none(w):
    tech = client_for(w.user("tech"))
    agent = w.agent("own")
    cmd = do_issue_command(agent, "diagnostics", acting_user=SYSTEM)
    cancel = reverse("agents:command_cancel", args=[agent.public_id, cmd.command_id])
    assert tech.post(cancel).status_code == 302
    cmd.refresh_from_db()
    assert cmd.status == CommandStatus.CANCELLED
    assert tech.post(reverse("agents:agent_suspend", args=[agent.public_id])).status_code == 302
    refused = tech.post(reverse("agents:agent_command", args=[agent.public_id]),
                        {"kind": "scan-now"})
    assert refused.status_code == 400
    assert "Commands can only be sent to an active agent." in refused.content.decode()
    assert AgentCommand.objects.filter(agent=agent).count() == 1


def _schedule_post(w: UiWorld, **override: object) -> dict[str, object]:
    data: dict[str, object] = {"status_poll_min": 10, "meter_read_s": 6 * 3600,
                               "month_end_read": "on", "rediscovery_h": 48,
                               "profile_check": "04:15"}
    data.update(override)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(("field", "value"), [
    ("status_poll_min", 0),  # the protocol's minimum is 60 s
    ("status_poll_min", 1441),  # its maximum one day
    ("status_poll_min", "ten"),
    ("meter_read_s", MIN_METER_READ_S - 3600),  # more often than every 3 hours
    ("meter_read_s", MAX_METER_READ_S + 86400),  # less often than quarterly
    ("rediscovery_h", 0),
    ("rediscovery_h", 30 * 24 + 1),
    ("profile_check", "24:00"),
    ("profile_check", "7 am"),
])
def test_schedule_form_refuses_what_the_protocol_refuses(w, field, value):
    tech = client_for(w.user("tech"))
    agent = w.agent("child")
    before = agent.schedule_model()
    response = tech.post(reverse("agents:agent_schedule", args=[agent.public_id]),
                         _schedule_post(w, **{field: value}))
    assert response.status_code == 400
    assert f'id="field-{field}"' in response.content.decode()
    assert 'class="errorlist' in response.content.decode()
    assert w.agent("child").schedule_model() == before


def test_schedule_form_saves_and_the_agent_receives_it(w):
    tech = client_for(w.user("tech"))
    agent = w.agent("child")
    page = tech.get(detail_url(w, "child")).content.decode()
    # The browser knows the protocol's limits too.
    assert 'name="status_poll_min" value="5" min="1" max="1440"' in page
    assert 'name="rediscovery_h" value="24" min="1" max="720"' in page
    response = tech.post(reverse("agents:agent_schedule", args=[agent.public_id]),
                         _schedule_post(w, month_end_read=None, meter_read_s=92 * 86400))
    assert response.status_code == 302
    stored = w.agent("child")
    assert stored.schedule_model() == Schedule(
        version=2, status_poll_s=600, meter_read_s=92 * 86400, month_end_read=False,
        rediscovery_s=48 * 3600, profile_check="04:15")
    assert AuditEvent.objects.filter(action="agent.schedule_changed").count() == 1
    fake = w.fake["child"]
    reply = fake.reply(fake.send(fake.poll()))
    assert reply.schedule is not None
    assert reply.schedule.version == 2
    assert reply.schedule.meter_read_s == 92 * 86400
    # The minimum the protocol allows is accepted (one minute).
    ok = tech.post(reverse("agents:agent_schedule", args=[agent.public_id]),
                   _schedule_post(w, status_poll_min=1, meter_read_s=3 * 3600))
    assert ok.status_code == 302
    assert w.agent("child").schedule_model().status_poll_s == 60


def test_rename_suspend_unsuspend_revoke(w):
    tech = client_for(w.user("tech"))
    agent = w.agent("child")
    pid = agent.public_id
    assert tech.post(reverse("agents:agent_rename", args=[pid]),
                     {"name": "  Berlin   gateway "}).status_code == 302
    assert w.agent("child").name == "Berlin gateway"
    assert tech.post(reverse("agents:agent_rename", args=[pid]), {"name": " "}).status_code == 400
    assert tech.post(reverse("agents:agent_suspend", args=[pid])).status_code == 302
    row = w.agent("child")
    assert (row.status, row.status_reason) == (AgentStatus.SUSPENDED, "admin")
    fake = w.fake["child"]
    assert fake.reply(fake.send(fake.poll())).status == "suspended"
    assert tech.post(reverse("agents:agent_unsuspend", args=[pid])).status_code == 302
    assert w.agent("child").status == AgentStatus.ACTIVE
    assert tech.post(reverse("agents:agent_revoke", args=[pid])).status_code == 302
    assert w.agent("child").status == AgentStatus.REVOKED
    page = tech.get(detail_url(w, "child")).content.decode()
    assert "Revoked" in page
    for action in ("agent_suspend", "agent_reenroll", "agent_revoke", "agent_unsuspend"):
        assert reverse(f"agents:{action}", args=[pid]) not in page
    # A revoked agent stays revoked, whatever is posted.
    response = tech.post(reverse("agents:agent_unsuspend", args=[pid]), follow=True)
    assert "A revoked agent stays revoked." in response.content.decode()
    assert w.agent("child").status == AgentStatus.REVOKED


# --- enrollment tokens -----------------------------------------------------------------


def token_post(w: UiWorld, tenant: str = "berlin", **override: object) -> dict[str, object]:
    expires = timezone.localtime(timezone.now() + timedelta(hours=6))
    data: dict[str, object] = {"tenant": w.t[tenant].pk, "label": "Berlin rollout",
                               "expires_at": expires.strftime("%Y-%m-%dT%H:%M"),
                               "max_uses": 3, "source_network": ""}
    data.update(override)
    return data


def test_token_is_shown_once_stored_hashed_and_enrolls_an_agent(w):
    tech = client_for(w.user("tech"))
    form = tech.get(reverse("agents:token_create")).content.decode()
    default = timezone.localtime(timezone.now() + timedelta(hours=24)).strftime("%Y-%m-%dT%H")
    assert f'value="{default}' in form  # 24 hours by default
    response = tech.post(reverse("agents:token_create"),
                         token_post(w, source_network="198.51.100.0/24"))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert_no_inline_code(html)
    clear = element_text(html, "enroll-token")
    assert element_text(html, "enroll-command") == (
        f"fleetroom-agent enroll --server http://127.0.0.1:8000 --token {clear}")
    token = EnrollmentToken.objects.get(label="Berlin rollout")
    assert token.token_hash == hashlib.sha256(clear.encode()).hexdigest()
    assert (token.tenant, token.max_uses, token.source_network, token.created_by) == (
        w.t["berlin"], 3, "198.51.100.0/24", w.user("tech"))
    assert not any(clear in str(v) for v in
                   EnrollmentToken.objects.filter(pk=token.pk).values().get().values())
    assert not any(clear[5:] in json.dumps(e.data) for e in AuditEvent.objects.all())
    listing = tech.get(reverse("agents:token_list")).content.decode()
    assert clear not in listing
    assert token.prefix in listing
    row = next(r for r in table_rows(listing, "tokens") if r[0].startswith(token.prefix))
    assert row[1:5] == ["Usable", "Acme › Berlin", row[3], "0 / 3"]
    # From outside the token's network it is refused (and an alert is raised) …
    req, _key = enroll_request(clear, hostname="new-pc")
    assert post_enroll(Client(), req, ip="203.0.113.9").status_code == 403
    # … from inside it enrolls, and the agent is listed.
    assert post_enroll(Client(), req, ip="198.51.100.77").status_code == 201
    rows = rows_by_host(tech.get(reverse("agents:agent_list")))
    assert rows["new-pc"][2] == "Acme › Berlin"
    listing = tech.get(reverse("agents:token_list")).content.decode()
    row = next(r for r in table_rows(listing, "tokens") if r[0].startswith(token.prefix))
    assert row[4] == "1 / 3"


def test_token_list_pages_keep_the_filter(w):
    """The shared pagination links carry the list's filter (``show=usable``)."""
    from fleetroom.agents.services import do_create_enrollment_token
    from fleetroom.agents.views import PAGE_SIZE

    for i in range(PAGE_SIZE + 1):
        do_create_enrollment_token(w.t["berlin"], acting_user=SYSTEM, label=f"bulk {i}")
    tech = client_for(w.user("tech"))
    url = reverse("agents:token_list")
    html = tech.get(url, {"show": "usable"}).content.decode()
    assert 'href="?show=usable&amp;page=2" rel="next"' in html
    second = tech.get(url, {"show": "usable", "page": "2"}).content.decode()
    assert 'href="?show=usable&amp;page=1" rel="prev"' in second
    assert "Page 2 of 2" in second


def test_token_form_offers_only_where_agents_are_managed(w):
    tech = client_for(w.user("tech"))
    html = tech.get(reverse("agents:token_create")).content.decode()
    offered = {name for name, key in (("Acme", "acme"), ("Berlin", "berlin"),
                                      ("Hamburg", "hamburg"), ("Initech", "initech"),
                                      ("Munich", "munich"), ("Paris", "paris"),
                                      ("Dealer A", "dealer_a"))
               if f'<option value="{w.t[key].pk}"' in html}
    assert offered == {"Acme", "Berlin", "Hamburg", "Initech", "Munich"}
    before = EnrollmentToken.objects.count()
    for bad in (token_post(w, "paris"), token_post(w, "dealer_a"),
                token_post(w, max_uses=0), token_post(w, max_uses=10_001),
                token_post(w, source_network="10.1.2.3/24"),
                token_post(w, source_network="not a network"),
                token_post(w, expires_at=(timezone.localtime(timezone.now() + timedelta(
                    days=91))).strftime("%Y-%m-%dT%H:%M")),
                token_post(w, expires_at="2020-01-01T00:00")):
        assert tech.post(reverse("agents:token_create"), bad).status_code == 400, bad
    assert EnrollmentToken.objects.count() == before


def test_revoked_token_refuses_and_raises_an_alert_to_acknowledge(w):
    tech = client_for(w.user("tech"))
    tech.post(reverse("agents:token_create"), token_post(w, label="to revoke"))
    token = EnrollmentToken.objects.get(label="to revoke")
    clear_html = tech.post(reverse("agents:token_create"),
                           token_post(w, label="kept", max_uses=2))
    kept = element_text(clear_html.content.decode(), "enroll-token")
    confirm = tech.get(reverse("agents:token_revoke", args=[token.pk]))
    assert confirm.status_code == 200
    assert token.prefix in confirm.content.decode()
    assert tech.post(reverse("agents:token_revoke", args=[token.pk])).status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert token.revoked_by == w.user("tech")
    listing = tech.get(reverse("agents:token_list"), {"show": "usable"}).content.decode()
    assert token.prefix not in listing
    assert kept[:12] in listing
    # A spent token used again: the alert lands on the security page.
    req, _key = enroll_request(kept)
    assert post_enroll(Client(), req, ip="198.51.100.50").status_code == 201
    req2, _key2 = enroll_request(kept)
    assert post_enroll(Client(), req2, ip="198.51.100.51").status_code == 201  # used up
    spent_token = EnrollmentToken.objects.get(label="kept")
    req3, _key3 = enroll_request(kept, hostname="intruder")
    assert post_enroll(Client(), req3, ip="192.0.2.66").status_code == 403
    event = SecurityEvent.objects.get(token=spent_token)
    assert event.kind == SecurityEventKind.TOKEN_REUSE
    page = tech.get(reverse("agents:security_events")).content.decode()
    row = next(r for r in table_rows(page, "events") if spent_token.prefix in r[1])
    assert "This enrollment token has been used up." in row[2]
    assert "intruder" in row[2]
    assert "192.0.2.66" in row[2]
    # The menu of the agents pages counts open events.
    assert 'Security events <span class="state warning">1</span>' in page
    ack = tech.post(reverse("agents:security_event_acknowledge", args=[event.pk]),
                    {"next": "https://evil.example/"})
    assert ack.status_code == 302
    assert ack["Location"] == reverse("agents:security_events")
    event.refresh_from_db()
    assert event.acknowledged_by == w.user("tech")
    assert table_rows(tech.get(reverse("agents:security_events")).content.decode(),
                      "events") == []
    everything = tech.get(reverse("agents:security_events"), {"show": "all"})
    assert len(table_rows(everything.content.decode(), "events")) == 1


def test_reenroll_shows_a_token_once_that_gives_new_keys(w):
    tech = client_for(w.user("tech"))
    agent = w.agent("child")
    old_key = agent.key_id
    response = tech.post(reverse("agents:agent_reenroll", args=[agent.public_id]), {})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    clear = element_text(response.content.decode(), "enroll-token")
    token = EnrollmentToken.objects.get(for_agent=agent)
    assert token.token_hash == hashlib.sha256(clear.encode()).hexdigest()
    assert token.max_uses == 1
    req, _key = enroll_request(clear, hostname="berlin-pc")
    answer = post_enroll(Client(), req, ip="198.51.100.99")
    assert answer.status_code == 201
    assert answer.json()["agent_id"] == agent.public_id
    assert w.agent("child").key_id != old_key
    assert Agent.objects.count() == len(RELATIONS)  # the same agent, new keys


# --- around the pages ------------------------------------------------------------------


def test_menu_lists_agents_only_for_who_may_see_fleet(w):
    url = reverse("agents:agent_list")
    home = reverse("fleet:dashboard")
    assert f'href="{url}"' in client_for(w.user("viewer")).get(home).content.decode()
    assert f'href="{url}"' not in client_for(w.user("nobody")).get(home).content.decode()
    # Tokens and events: only for who manages agents somewhere.
    viewer_page = client_for(w.user("viewer")).get(url).content.decode()
    assert reverse("agents:token_list") not in viewer_page
    tech_page = client_for(w.user("tech")).get(url).content.decode()
    assert reverse("agents:token_list") in tech_page


def test_status_json_lists_the_agents(w):
    send_items(w.fake["child"], "gaps", [gap_record(5, 1, 5)])
    rows = {r["id"]: r for r in collect_status()["agent_list"]}
    assert set(rows) == {w.agent(r).public_id for r in RELATIONS}
    for relation in RELATIONS:
        row = rows[w.agent(relation).public_id]
        assert row["version"] == STATES[relation].version
        assert row["queue_depth"] == STATES[relation].queue_items
        assert row["name"] == STATES[relation].hostname
        assert row["tenant_id"] == w.t[AGENT_TENANT[relation]].pk
        assert row["last_seen"] is not None
        assert row["overdue"] is False
    assert rows[w.agent("child").public_id]["gaps"] == 1
    assert rows[w.agent("child").public_id]["tenant"] == "Acme › Berlin"
    assert rows[w.agent("own").public_id]["gaps"] == 0


def test_an_agent_that_never_reported_opens_fine():
    w = build_world(with_state=False)
    tech = client_for(w.user("tech"))
    html = tech.get(detail_url(w, "own")).content.decode()
    assert "The agent has not reported its state yet." in html
    rows = rows_by_host(tech.get(reverse("agents:agent_list")))
    assert rows["acme-gw"][3] == "never"
    report_state(w.fake["own"], STATES["own"])
    assert rows_by_host(tech.get(reverse("agents:agent_list")))["acme-gw"][3] == "now"


def test_list_costs_the_same_number_of_queries_for_more_agents(w):
    tech = client_for(w.user("tech"))
    url = reverse("agents:agent_list")
    tech.get(url)  # warm the session and the scope cache
    with CaptureQueriesContext(connection) as few:
        assert len(rows_by_host(tech.get(url))) == 3
    for i in range(4):
        FakeAgent(Client(), w.t["hamburg"], hostname=f"hh-{i}", ip=f"198.51.100.{60 + i}")
    with CaptureQueriesContext(connection) as more:
        assert len(rows_by_host(tech.get(url))) == 7
    assert len(more.captured_queries) == len(few.captured_queries)

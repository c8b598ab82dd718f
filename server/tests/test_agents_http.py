"""The protocol over a real socket: pytest-django's live server (a threaded WSGI server
on 127.0.0.1), httpx as the client, real commits (no test transaction around the
request), so acknowledgement after commit and the task queued on commit run exactly
as in production (Huey in immediate mode)."""

from __future__ import annotations

import httpx
import pytest
from fleetroom.agents.keys import server_keys
from fleetroom.agents.models import Agent, ItemState, ReceivedItem
from fleetroom.fleet.models import CounterValue, Device
from fleetroom_protocol.envelope import SERVER, body_model, seal, split, verify
from fleetroom_protocol.messages import (
    CONTENT_TYPE,
    PATH_ENROLL,
    PATH_MESSAGES,
    AckRange,
    AgentState,
    EnrollResponse,
    Reply,
    encode_batch_body,
)

from server.tests.test_agents_support import agent_json, clear_limits, enroll_request, new_token
from server.tests.test_fleet_support import LIFE, SERIAL, make_tree, recording

pytestmark = pytest.mark.django_db(transaction=True)


def test_enroll_and_send_over_http(live_server):
    clear_limits()
    tree = make_tree()
    req, signing = enroll_request(new_token(tree["s1"]), hostname="live")
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        response = http.post(PATH_ENROLL, content=req.model_dump_json(),
                             headers={"content-type": "application/json"})
        assert response.status_code == 201, response.text
        enrolled = EnrollResponse.model_validate_json(response.content)
        store = "0123456789abcdef"
        items = [(store, "readings", 1, 2, 1.0, agent_json("alerts").encode()),
                 (store, "readings", 2, 2, 1.0, agent_json("demo-kyocera-m3145").encode())]
        envelope = seal(encode_batch_body(items, AgentState(hostname="live")),
                        signing_key=signing, sender=enrolled.agent_id, to=SERVER, ctr=1,
                        kind="batch")
        sent = http.post(PATH_MESSAGES, content=envelope,
                         headers={"content-type": CONTENT_TYPE})
    assert sent.status_code == 200
    assert sent.headers["content-type"] == CONTENT_TYPE
    sealed = split(sent.content)
    verify(sealed, server_keys().verify_key)
    assert (sealed.header.to, sealed.header.reply_to) == (enrolled.agent_id, 1)
    reply = body_model(sealed, Reply)
    assert reply.acked == [AckRange(store=store, stream="readings", first=1, last=2)]
    # The task queued on commit has normalised both readings.
    agent = Agent.objects.get(public_id=enrolled.agent_id)
    assert set(ReceivedItem.objects.filter(agent=agent).values_list("state", flat=True)) == {
        ItemState.DONE}
    r = recording("alerts")
    from tests.support.recordings import integer, text

    device = Device.objects.get(serial=text(r, SERIAL))
    assert device.tenant_id == tree["s1"].pk
    assert CounterValue.objects.get(device=device, name="total").value == integer(r, LIFE)
    clear_limits()

"""The SNMP client is read-only, proven two ways.

1. Statically: the back-end source never names a SET operation, and the only
   pysnmp command generators it uses are GET, GETNEXT and GETBULK.
2. On the wire: a UDP tap between the client and snmpsim decodes every datagram
   the client sends while it runs GETs and walks with v1, v2c, and v3 at the
   levels whose scoped PDU is readable (noAuthNoPriv, authNoPriv); every PDU must
   be a GetRequest, GetNextRequest or GetBulkRequest.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from fleetroom_agent.snmp import community, pysnmp_backend
from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient
from fleetroom_agent.snmp.types import Credential, SnmpError, Target, Timing
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator, V3User

from tests.support import badagent
from tests.support.recordings import recordings_dir

RECORDINGS = recordings_dir() or Path("../shared/fixtures/snmprec")
READ_PDUS = {"get-request", "get-next-request", "get-bulk-request"}
BACKEND = Path(pysnmp_backend.__file__)
CHANNEL = Path(community.__file__)
"""The v1/v2c path: builds its PDUs itself with pysnmp's protocol API."""






# ---------------------------------------------------------------- static


@pytest.mark.parametrize("module", [BACKEND, CHANNEL], ids=lambda p: p.name)
def test_backend_source_never_names_a_set_operation(module):
    source = module.read_text()
    for word in ("set_cmd", "setCmd", "SetRequest", "SetCommandGenerator", "set-request",
                 "SetRequestPDU"):
        assert word not in source, word


def test_channel_builds_only_read_pdus():
    """Every PDU class the v1/v2c path names is a read request (responses are only
    ever decoded, never built)."""
    tree = ast.parse(CHANNEL.read_text())
    pdus = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.endswith("PDU")}
    assert pdus == {"GetRequestPDU", "GetNextRequestPDU", "GetBulkRequestPDU",
                    "apiPDU", "apiBulkPDU"}


def test_backend_uses_only_read_command_generators():
    """Every attribute taken from pysnmp's cmdgen module is a read generator."""
    tree = ast.parse(BACKEND.read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "cmdgen"}
    assert used == {"GetCommandGenerator", "NextCommandGeneratorSingleRun",
                    "BulkCommandGeneratorSingleRun"}
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert not {name for name in imported if "set" in name.lower()}


def test_client_interface_has_no_write_method():
    public = {name for name in dir(PysnmpClient) if not name.startswith("_")}
    assert public == {"get", "walk", "walk_many", "close", "max_in_flight"}


# ---------------------------------------------------------------- on the wire


@pytest.fixture(scope="module")
def sim():
    if not (RECORDINGS / "sharp.snmprec").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"recordings not found in {RECORDINGS} (CI must have ../shared)")
        pytest.skip(f"recordings not found in {RECORDINGS} (set FLEETROOM_SHARED)")
    users = [V3User("ro-noauth"),
             V3User("ro-auth", "SHA256", "ro-auth-key-123")]
    with SnmpSimulator([RECORDINGS], v3_users=users) as simulator:
        yield simulator


CREDENTIALS = [
    Credential("ro-v1", version="1", community="sharp"),
    Credential("ro-v2c", version="2c", community="sharp"),
    Credential("ro-v3-noauth", version="3", user="ro-noauth", context="sharp"),
    Credential("ro-v3-auth", version="3", user="ro-auth", auth_proto="SHA256",
               auth_key="ro-auth-key-123", context="sharp"),
]


@pytest.mark.snmpsim
@pytest.mark.timeout(120)
@pytest.mark.parametrize("cred", CREDENTIALS, ids=[c.name for c in CREDENTIALS])
async def test_every_pdu_on_the_wire_is_a_read(sim, cred):
    client = PysnmpClient()
    try:
        async with badagent.UdpTap((sim.host, sim.port)) as tap:
            at = Target("127.0.0.1", tap.port)
            oids = [f"1.3.6.1.2.1.1.{i}.0" for i in range(1, 8)] + ["1.3.6.1.2.1.1.99.0"]
            await client.get(at, cred, oids)
            await client.get(at, cred, [f"1.3.6.1.2.1.2.2.1.{c}.1" for c in range(1, 23)])
            walked = await client.walk(at, cred, "1.3.6.1.2.1.43.11", Timing(max_repetitions=5))
            assert walked.rows
            many = await client.walk_many(at, cred, ["1.3.6.1.2.1.2.2.1.6", "1.3.6.1.2.1.25.3",
                                                     "1.3.6.1.2.1.43.5", "1.3.6.1.2.1.43.11"])
            assert all(not isinstance(r, SnmpError) and r.rows for r in many.values())
            await client.walk(at, cred, "1.3.6.1.6.3")  # runs into endOfMibView
            bad = Credential("ro-bad", version=cred.version, community="nope",
                             user="nobody", context="sharp")
            with pytest.raises(SnmpError):  # and an error path: unknown community/user
                await client.get(at, bad, ["1.3.6.1.2.1.1.1.0"], Timing(timeout=0.3, retries=0))
        kinds = [badagent.pdu_kind(d) for d in tap.sent]
    finally:
        await client.close()
    assert len(kinds) >= 5
    assert set(kinds) <= READ_PDUS, kinds
    if cred.version == "1":
        assert "get-next-request" in kinds
    else:
        assert "get-bulk-request" in kinds


async def test_a_request_sent_to_the_client_draws_no_answer():
    """An 'agent' that sends a GetRequest back at the client: the client's engine
    must not answer it (no Response, no Report) — it only ever sends reads."""
    client = PysnmpClient()
    cred = Credential("echo", version="2c", community="public")
    try:
        faults = badagent.Misbehaviour(echo_request=True)
        async with (badagent.BadAgent({(1, 3, 6, 1, 2, 1, 1, 1, 0): None}, faults=faults) as agent,
                    badagent.UdpTap(("127.0.0.1", agent.port)) as tap):
            with pytest.raises(SnmpError):
                await client.get(Target("127.0.0.1", tap.port), cred,
                                 ["1.3.6.1.2.1.1.1.0"], Timing(timeout=0.3, retries=1))
            kinds = [badagent.pdu_kind(d) for d in tap.sent]
            echoed = [badagent.pdu_kind(d) for d in tap.received]
    finally:
        await client.close()
    assert echoed == ["get-request", "get-request"]
    assert kinds == ["get-request", "get-request"]


def test_the_wire_decoder_would_see_a_set():
    """The tap's decoder tells a SetRequest from the reads (so the test above can fail)."""
    from pyasn1.codec.ber import encoder
    from pysnmp.proto import api

    for version in (api.SNMP_VERSION_1, api.SNMP_VERSION_2C):
        p = api.PROTOCOL_MODULES[version]
        pdu = p.SetRequestPDU()
        p.apiPDU.set_defaults(pdu)
        msg = p.Message()
        p.apiMessage.set_defaults(msg)
        p.apiMessage.set_community(msg, "public")
        p.apiMessage.set_pdu(msg, pdu)
        assert badagent.pdu_kind(encoder.encode(msg)) == "set-request"
    assert badagent.pdu_kind(b"\x30\x03\x02\x01") == "undecodable"

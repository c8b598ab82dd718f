"""PysnmpClient against snmpsim serving recordings of real printers.

Expected values come from the .snmprec files themselves (parsed here, not by
project code), so a test never compares the client with its own output.  One
simulator serves every recording (community / v3 context = file stem) for the
whole module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest
from fleetroom_agent.snmp.pysnmp_backend import MAX_GET_VARBINDS, PysnmpClient
from fleetroom_agent.snmp.types import (
    Absent,
    Credential,
    SnmpError,
    SnmpValue,
    Target,
    Timing,
    ValueType,
)
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator, V3User

from tests.support import badagent
from tests.support.recordings import recordings_dir

pytestmark = [pytest.mark.snmpsim, pytest.mark.timeout(120)]

RECORDINGS = recordings_dir() or Path("../shared/fixtures/snmprec")
AUTH_KEY = "auth-Secret-4711"
PRIV_KEY = "priv-Secret-0815"
"""Test secrets: tests check that neither ever shows up in an error or a log line."""





# (our auth, our priv, snmpsim auth, snmpsim priv).  snmpsim's AES192/AES256 are the
# Reeder ("Cisco") variants and its *BLMT ones Blumenthal; ours follow net-snmp.
# MD5/SHA-1 with AES-192/256 are the pairs where the two key extensions differ.
V3_MATRIX = [
    ("MD5", "DES", "MD5", "DES"),
    ("SHA", "AES", "SHA", "AES"),
    ("SHA", "AES128", "SHA", "AES128"),
    ("SHA224", "AES192", "SHA224", "AES192BLMT"),
    ("SHA256", "AES256", "SHA256", "AES256BLMT"),
    ("SHA384", "3DES", "SHA384", "3DES"),
    ("SHA512", "AES256C", "SHA512", "AES256"),
    ("SHA", "AES256", "SHA", "AES256BLMT"),
    ("SHA", "AES256C", "SHA", "AES256"),
    ("MD5", "AES192", "MD5", "AES192BLMT"),
    ("MD5", "AES192C", "MD5", "AES192"),
    ("SHA224", "AES256C", "SHA224", "AES256"),
    ("SHA512", "none", "SHA512", "NONE"),
    ("MD5", "none", "MD5", "NONE"),
    ("none", "none", "NONE", "NONE"),
]


def _user(auth: str, priv: str) -> str:
    return f"u-{auth}-{priv}".lower()


def _sim_users() -> list[V3User]:
    users = [V3User(_user(a, p), sa, AUTH_KEY if a != "none" else None,
                    sp, PRIV_KEY if p != "none" else None) for a, p, sa, sp in V3_MATRIX]
    users.append(V3User("shared", "SHA", "shared-key-one", "AES", "shared-priv-one"))
    return users


@pytest.fixture(scope="module")
def sim():
    if not (RECORDINGS / "sharp.snmprec").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"recordings not found in {RECORDINGS} (CI must have ../shared)")
        pytest.skip(f"recordings not found in {RECORDINGS} (set FLEETROOM_SHARED)")
    with SnmpSimulator([RECORDINGS], v3_users=_sim_users()) as simulator:
        yield simulator


@pytest.fixture
async def client():
    c = PysnmpClient()
    yield c
    await c.close()


def target(sim: SnmpSimulator) -> Target:
    return Target(sim.host, sim.port)


def v2c(stem: str) -> Credential:
    return Credential(f"test-{stem}", version="2c", community=stem)


def v1(stem: str) -> Credential:
    return Credential(f"test-{stem}-v1", version="1", community=stem)


def v3(auth: str, priv: str, context: str = "sharp", *, user: str | None = None,
       auth_key: str = AUTH_KEY, priv_key: str = PRIV_KEY) -> Credential:
    return Credential(f"test-v3-{auth}-{priv}", version="3", user=user or _user(auth, priv),
                      auth_proto=auth, auth_key=auth_key if auth != "none" else None,
                      priv_proto=priv, priv_key=priv_key if priv != "none" else None,
                      context=context)


# ---------------------------------------------------------------- the oracle


def oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.split("."))


def expected_value(tag: str, raw: str) -> SnmpValue:
    """What an snmprec ``tag|value`` must come back as (snmpsim's file format)."""
    hexed = tag.endswith("x")
    number = int(tag.rstrip("x"))
    data = bytes.fromhex(raw) if hexed else raw.encode()
    if number == 2:
        return SnmpValue(ValueType.INTEGER, int(raw))
    if number == 4:
        return SnmpValue(ValueType.OCTETS, data)
    if number == 5:
        return SnmpValue(ValueType.NULL, b"")
    if number == 6:
        return SnmpValue(ValueType.OID, raw)
    if number == 64:
        return SnmpValue(ValueType.IPADDRESS, ".".join(str(b) for b in data) if hexed else raw)
    numeric = {65: ValueType.COUNTER32, 66: ValueType.GAUGE32, 67: ValueType.TIMETICKS,
               70: ValueType.COUNTER64}
    return SnmpValue(numeric[number], int(raw))


def recording(stem: str) -> dict[str, SnmpValue]:
    """Every OID of a recording with its expected value, in SNMP (numeric) order."""
    rows: dict[str, SnmpValue] = {}
    for line in (RECORDINGS / f"{stem}.snmprec").read_text().splitlines():
        if not line.strip():
            continue
        oid, tag, raw = line.split("|", 2)
        assert ":" not in tag, "variation modules would make values time-dependent"
        rows[oid] = expected_value(tag, raw)
    return dict(sorted(rows.items(), key=lambda kv: oid_key(kv[0])))


def subtree(rows: dict[str, SnmpValue], root: str) -> list[tuple[str, SnmpValue]]:
    return [(o, v) for o, v in rows.items() if o.startswith(root + ".")]


# ---------------------------------------------------------------- v1 / v2c


@pytest.mark.parametrize("stem", ["sharp", "jetdirect"])
async def test_v2c_get_matches_recording(sim, client, stem):
    """Every 5th OID of the recording in one call: several PDUs of <= 20 var-binds,
    every value and type as recorded."""
    rows = recording(stem)
    sample = list(rows)[::5]
    assert len(sample) > 2 * MAX_GET_VARBINDS
    got = await client.get(target(sim), v2c(stem), sample)
    assert got == {o: rows[o] for o in sample}


async def test_v1_get_matches_recording(sim, client):
    rows = recording("sharp")
    sample = list(rows)[::7]
    got = await client.get(target(sim), v1("sharp"), sample)
    assert got == {o: rows[o] for o in sample}


async def test_v1_get_with_missing_oid_returns_the_others(sim, client):
    """A v1 GET fails as a whole (noSuchName) when one OID is missing; the others
    must still come back, the missing one as an error."""
    rows = recording("sharp")
    present = list(rows)[:6]
    missing = "1.3.6.1.2.1.1.99.0"
    oids = [*present[:3], missing, *present[3:]]
    got = await client.get(target(sim), v1("sharp"), oids)
    assert got[missing] == Absent.ERROR
    assert {o: got[o] for o in present} == {o: rows[o] for o in present}


async def test_v2c_absent_oids(sim, client):
    rows = recording("sharp")
    first = next(iter(rows))
    got = await client.get(target(sim), v2c("sharp"),
                           [first, "1.3.6.1.2.1.1.1.7", "1.3.6.1.4.1.99999.1.0"])
    assert got[first] == rows[first]
    for oid in ("1.3.6.1.2.1.1.1.7", "1.3.6.1.4.1.99999.1.0"):
        assert got[oid] in (Absent.NO_SUCH_INSTANCE, Absent.NO_SUCH_OBJECT)


async def test_result_keys_are_the_callers_strings(sim, client):
    got = await client.get(target(sim), v2c("sharp"),
                           [".1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.1.0"])
    assert set(got) == {".1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.1.0"}
    assert got[".1.3.6.1.2.1.1.1.0"] == got["1.3.6.1.2.1.1.1.0"]


@pytest.mark.parametrize("cred", [v2c("sharp"), v1("sharp")], ids=["v2c", "v1"])
@pytest.mark.parametrize("root", [
    "1.3.6.1.2.1.43.11.1.1",  # prtMarkerSuppliesEntry
    "1.3.6.1.2.1.2.2.1.10",   # ifInOctets column
    "1.3.6.1.2.1.1",          # system group, followed by other data
])
async def test_walk_is_bounded_to_the_subtree(sim, client, cred, root):
    expected = subtree(recording("sharp"), root)
    assert expected
    result = await client.walk(target(sim), cred, root, Timing(max_repetitions=4))
    assert result.stopped is None
    assert result.rows == expected


@pytest.mark.parametrize("cred", [v2c("jetdirect"), v1("jetdirect")], ids=["v2c", "v1"])
async def test_walk_to_end_of_recording(sim, client, cred):
    """Walking from 1.3.6 crosses the whole recording and ends at endOfMibView (v2c)
    or noSuchName (v1) without an error.  v1 cannot carry Counter64, so the agent
    skips those rows (RFC 2576 4.1.2.2.1.3) — the oracle does the same."""
    rows = recording("jetdirect")
    expected = [(o, v) for o, v in rows.items()
                if cred.version != "1" or v.type != ValueType.COUNTER64]
    result = await client.walk(target(sim), cred, "1.3.6")
    assert result.stopped is None
    assert result.rows == expected


async def test_walk_max_rows(sim, client):
    expected = list(recording("sharp").items())[:10]
    result = await client.walk(target(sim), v2c("sharp"), "1.3.6", Timing(max_walk_rows=10))
    assert result.stopped == "max-rows"
    assert result.rows == expected


async def test_walk_past_the_last_oid_is_empty(sim, client):
    last = list(recording("sharp"))[-1]
    result = await client.walk(target(sim), v2c("sharp"), last)
    assert result.rows == []
    assert result.stopped is None


async def test_unknown_community_is_a_timeout(sim, client):
    """snmpsim, like most printers, does not answer an unknown community."""
    await client.get(target(sim), v2c("sharp"), ["1.3.6.1.2.1.1.1.0"])  # engine built
    t0 = time.monotonic()
    with pytest.raises(SnmpError) as err:
        await client.get(target(sim), v2c("no-such-recording"), ["1.3.6.1.2.1.1.1.0"],
                         Timing(timeout=0.3, retries=1))
    assert err.value.kind == "timeout"
    assert time.monotonic() - t0 < 0.3 * 2 + 1.0


# ---------------------------------------------------------------- walk_many: one stream

PRINTER_ROOTS = [
    "1.3.6.1.2.1.2.2.1.6",    # ifPhysAddress
    "1.3.6.1.2.1.25.3.2.1",   # hrDeviceEntry
    "1.3.6.1.2.1.25.3.5.1",   # hrPrinterEntry
    "1.3.6.1.2.1.43.5.1.1",   # prtGeneralEntry
    "1.3.6.1.2.1.43.8.2.1",   # prtInputEntry
    "1.3.6.1.2.1.43.10.2.1",  # prtMarkerEntry
    "1.3.6.1.2.1.43.11.1.1",  # prtMarkerSuppliesEntry
    "1.3.6.1.2.1.43.12.1.1",  # prtMarkerColorantEntry
    "1.3.6.1.2.1.43.18.1.1",  # prtAlertEntry (no recording has rows)
    "1.3.6.1.4.1.99999",      # nobody's enterprise: empty
]
DIFFERENTIAL_STEMS = ["sharp", "jetdirect", "brother", "konica", "ricoh_mpc3002", "epson"]


@pytest.mark.parametrize("stem", DIFFERENTIAL_STEMS)
@pytest.mark.parametrize("version", ["1", "2c"])
async def test_walk_many_matches_recording(sim, client, stem, version):
    """Every subtree of one multi-root stream equals the recording's rows under it
    (v1 cannot carry Counter64: the agent skips those rows, the oracle too)."""
    rows = recording(stem)
    cred = v1(stem) if version == "1" else v2c(stem)
    got = await client.walk_many(target(sim), cred, PRINTER_ROOTS, Timing(max_repetitions=10))
    for root in PRINTER_ROOTS:
        expected = [(o, v) for o, v in subtree(rows, root)
                    if version != "1" or v.type != ValueType.COUNTER64]
        result = got[root]
        assert not isinstance(result, SnmpError), (root, result)
        assert result.stopped is None, root
        assert result.rows == expected, root


@pytest.mark.parametrize("stem", DIFFERENTIAL_STEMS)
async def test_differential_community_channel_vs_pysnmp_engine(sim, client, stem):
    """The same reads through both pysnmp paths — v2c over our own socket with
    pysnmp's message API, SNMPv3 through pysnmp's full engine — give identical
    var-binds, and both equal the recording."""
    rows = recording(stem)
    sample = [*list(rows)[::3][:60], "1.3.6.1.2.1.1.99.0", "1.3.6.1.4.1.99999.1.0"]
    engine = v3("none", "none", context=stem)
    ours = v2c(stem)
    got_v2c = await client.get(target(sim), ours, sample)
    got_v3 = await client.get(target(sim), engine, sample)
    assert got_v2c == got_v3
    assert {o: got_v2c[o] for o in sample if o in rows} == {o: rows[o] for o in sample
                                                           if o in rows}
    walked_v2c = await client.walk_many(target(sim), ours, PRINTER_ROOTS)
    walked_v3 = await client.walk_many(target(sim), engine, PRINTER_ROOTS)
    assert walked_v2c == walked_v3
    for root in PRINTER_ROOTS:
        result = walked_v2c[root]
        assert not isinstance(result, SnmpError)
        assert result.rows == subtree(rows, root)


async def test_walk_many_is_a_few_pdus_on_the_wire(sim, client):
    """Through a tap: one GETBULK stream instead of one walk per subtree."""
    rows = recording("sharp")
    async with badagent.UdpTap((sim.host, sim.port)) as tap:
        got = await client.walk_many(Target("127.0.0.1", tap.port), v2c("sharp"),
                                     PRINTER_ROOTS)
        kinds = [badagent.pdu_kind(d) for d in tap.sent]
    useful = sum(len(subtree(rows, r)) for r in PRINTER_ROOTS)
    assert sum(len(r.rows) for r in got.values() if not isinstance(r, SnmpError)) == useful
    assert set(kinds) == {"get-bulk-request"}
    assert len(kinds) < len(PRINTER_ROOTS), kinds


# ---------------------------------------------------------------- SNMPv3


@pytest.mark.parametrize(("auth", "priv"), [(a, p) for a, p, _, _ in V3_MATRIX],
                         ids=[f"{a}-{p}" for a, p, _, _ in V3_MATRIX])
async def test_v3_security_matrix(sim, client, auth, priv):
    rows = recording("sharp")
    oids = list(rows)[:5]
    got = await client.get(target(sim), v3(auth, priv), oids)
    assert got == {o: rows[o] for o in oids}
    result = await client.walk(target(sim), v3(auth, priv), "1.3.6.1.2.1.43.11.1.1.6")
    assert result.rows == subtree(rows, "1.3.6.1.2.1.43.11.1.1.6")


@pytest.mark.parametrize(("ours", "theirs"), [("AES256", "AES256C"), ("AES256C", "AES256"),
                                              ("AES192", "AES192C")])
async def test_v3_blumenthal_and_reeder_are_not_interchangeable(sim, client, ours, theirs):
    """With SHA-1/MD5 the AES-192/256 key extensions differ: asking a Reeder user
    with the Blumenthal key (or the reverse) must fail, so the mapping is real."""
    auth = "MD5" if "192" in ours else "SHA"
    cred = v3(auth, ours, user=_user(auth, theirs))
    with pytest.raises(SnmpError) as err:
        await client.get(target(sim), cred, ["1.3.6.1.2.1.1.1.0"], Timing(timeout=0.5, retries=0))
    assert err.value.kind in ("auth", "timeout")


async def test_v3_context_selects_the_recording(sim, client):
    sys_descr = "1.3.6.1.2.1.1.1.0"
    for stem in ("sharp", "jetdirect"):
        got = await client.get(target(sim), v3("SHA256", "AES256", context=stem), [sys_descr])
        assert got[sys_descr] == recording(stem)[sys_descr]


@pytest.mark.parametrize(("auth_key", "priv_key", "why"), [
    ("wrong-auth-key-1", PRIV_KEY, "auth key"),
    (AUTH_KEY, "wrong-priv-key-1", "privacy key"),
])
async def test_v3_wrong_key_is_a_quick_auth_error_without_secrets(sim, client, caplog, auth_key,
                                                                   priv_key, why):
    caplog.set_level(logging.DEBUG)
    cred = v3("SHA256", "AES256", auth_key=auth_key, priv_key=priv_key)
    t0 = time.monotonic()
    with pytest.raises(SnmpError) as err:
        await client.get(target(sim), cred, ["1.3.6.1.2.1.1.1.0"], Timing(timeout=3, retries=1))
    assert err.value.kind == "auth"
    assert time.monotonic() - t0 < 2.0, "an auth failure must not wait for the timeout"
    assert why in str(err.value)
    shown = " ".join([str(err.value), repr(err.value), repr(cred), cred.describe(), caplog.text])
    for secret in (auth_key, priv_key, AUTH_KEY, PRIV_KEY):
        assert secret not in shown


async def test_v3_unknown_user(sim, client):
    cred = v3("SHA256", "AES256", user="nobody-here")
    with pytest.raises(SnmpError) as err:
        await client.get(target(sim), cred, ["1.3.6.1.2.1.1.1.0"])
    assert err.value.kind == "auth"
    assert "user" in str(err.value)


async def test_v3_same_user_name_with_different_keys_on_two_devices(sim, client):
    """Two devices, one user name, different passwords, polled concurrently.
    pysnmp keeps one USM row per user name; without the client's per-name gate the
    second credential replaces the first while its requests are in flight."""
    with SnmpSimulator([RECORDINGS], v3_users=[
            V3User("shared", "SHA", "shared-key-two", "AES", "shared-priv-two")]) as other:
        one = Credential("one", version="3", user="shared", auth_proto="SHA",
                         auth_key="shared-key-one", priv_proto="AES",
                         priv_key="shared-priv-one", context="sharp")
        two = Credential("two", version="3", user="shared", auth_proto="SHA",
                         auth_key="shared-key-two", priv_proto="AES",
                         priv_key="shared-priv-two", context="jetdirect")
        sys_descr = "1.3.6.1.2.1.1.1.0"
        jobs = []
        for _ in range(10):
            jobs.append(client.get(target(sim), one, [sys_descr]))
            jobs.append(client.get(Target(other.host, other.port), two, [sys_descr]))
        results = await asyncio.gather(*jobs)
    for i, got in enumerate(results):
        stem = "sharp" if i % 2 == 0 else "jetdirect"
        assert got[sys_descr] == recording(stem)[sys_descr]


async def test_v3_engine_id_is_discovered_once_per_device(sim, client):
    """Through a wire tap: the first request to a v3 device starts with engine-ID
    discovery (an unauthenticated, reportable probe), later requests, GET or walk,
    go out authenticated and encrypted at once — one datagram per PDU.

    Measured on loopback against snmpsim (2 cores, 10-OID GET): the first
    SHA256/AES256 GET took ~175 ms and 2 datagrams (discovery, key hashing and
    localisation), the second ~17 ms and 1 datagram; a second user on the same,
    already discovered device needed no discovery (1 datagram, ~95 ms of key set-up)."""
    async with badagent.UdpTap((sim.host, sim.port)) as tap:
        tapped = Target("127.0.0.1", tap.port)
        cred = v3("SHA256", "AES256")
        await client.get(tapped, cred, ["1.3.6.1.2.1.1.1.0"])
        first = list(tap.sent)
        assert len(first) >= 2
        assert badagent.v3_flags(first[0]) & 3 == 0, "discovery probe is not authenticated"
        assert badagent.v3_flags(first[-1]) & 3 == 3
        tap.clear()
        await client.get(tapped, cred, ["1.3.6.1.2.1.1.3.0"])
        assert len(tap.sent) == 1
        assert badagent.v3_flags(tap.sent[0]) & 3 == 3
        tap.clear()
        result = await client.walk(tapped, cred, "1.3.6.1.2.1.43.11.1.1.6",
                                   Timing(max_repetitions=50))
        assert result.rows
        assert len(tap.sent) == 1


async def test_v3_credentials_are_checked_before_sending(client):
    """Inconsistent credentials fail at once, naming the problem, not the secret."""
    t = Target("127.0.0.1", 9)
    bad = [
        Credential("x", version="3", user=None),
        Credential("x", version="3", user="u", auth_proto="none", priv_proto="AES",
                   priv_key=PRIV_KEY),
        Credential("x", version="3", user="u", auth_proto="SHA", auth_key=None),
        Credential("x", version="3", user="u", auth_proto="SHA", auth_key=AUTH_KEY,
                   priv_proto="AES", priv_key=None),
    ]
    for cred in bad:
        with pytest.raises(SnmpError) as err:
            await client.get(t, cred, ["1.3.6.1.2.1.1.1.0"])
        assert err.value.kind == "auth"
        assert AUTH_KEY not in str(err.value)
        assert PRIV_KEY not in str(err.value)

"""PysnmpClient against net-snmp's snmpd: an SNMPv3 implementation that is not pysnmp.

snmpsim is pysnmp on the agent side too, so a protocol constant mapped wrongly
on both sides would still agree there.  net-snmp names the AES key extensions
itself (AES-192/AES-256 = Blumenthal draft, AES-192-C/AES-256-C = Reeder/"Cisco"),
and this module checks that our ``AES192``/``AES256``/``AES192C``/``AES256C`` talk
to exactly the matching net-snmp users.  The pairs use MD5/SHA-1, where the two
extensions give different keys.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fleetroom_agent.snmp.pysnmp_backend import PysnmpClient
from fleetroom_agent.snmp.types import Credential, SnmpError, SnmpValue, Target, Timing, ValueType
from fleetroom_fleetsim.snmpsim_runner import free_udp_port

SNMPD = shutil.which("snmpd") or ("/usr/sbin/snmpd" if Path("/usr/sbin/snmpd").exists() else None)
pytestmark = [
    pytest.mark.netsnmp,
    pytest.mark.timeout(60),
    pytest.mark.skipif(SNMPD is None, reason="net-snmp snmpd not installed"),
]

AUTH_KEY = "netsnmp-auth-123"
PRIV_KEY = "netsnmp-priv-456"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
NET_SNMP_LINUX = "1.3.6.1.4.1.8072.3.2.10"

# user -> (net-snmp auth, net-snmp priv, our auth, our priv)
USERS = {
    "blu256": ("SHA", "AES-256", "SHA", "AES256"),
    "cis256": ("SHA", "AES-256-C", "SHA", "AES256C"),
    "blu192": ("MD5", "AES-192", "MD5", "AES192"),
    "cis192": ("MD5", "AES-192-C", "MD5", "AES192C"),
    "sha512": ("SHA-512", "AES-128", "SHA512", "AES"),
    "sha224": ("SHA-224", "DES", "SHA224", "DES"),
}


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory):
    assert SNMPD is not None
    work = tmp_path_factory.mktemp("snmpd")
    port = free_udp_port()
    lines = [f"createUser {u} {a} {AUTH_KEY} {p} {PRIV_KEY}" for u, (a, p, _, _) in USERS.items()]
    lines += [f"rouser {u} priv" for u in USERS]
    lines += ["rocommunity ready 127.0.0.1"]
    conf = work / "snmpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(work / "persist"), "MIBS": ""}
    proc = subprocess.Popen(
        [SNMPD, "-f", "-Lf", str(work / "snmpd.log"), "-C", "-c", str(conf),
         "-p", str(work / "snmpd.pid"), f"udp:127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("snmpd did not start: " + (work / "snmpd.log").read_text()[-500:])
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(port: int) -> bool:
    async def probe() -> bool:
        client = PysnmpClient()
        try:
            await client.get(Target("127.0.0.1", port), Credential("ready", community="ready"),
                             [SYS_OBJECT_ID], Timing(timeout=0.3, retries=0))
            return True
        except SnmpError:
            return False
        finally:
            await client.close()
    return asyncio.run(probe())


def cred(user: str, auth: str, priv: str) -> Credential:
    return Credential(f"netsnmp-{user}", version="3", user=user, auth_proto=auth,
                      auth_key=AUTH_KEY, priv_proto=priv, priv_key=PRIV_KEY)


@pytest.mark.parametrize("user", list(USERS))
async def test_v3_against_net_snmp(snmpd, user):
    _, _, auth, priv = USERS[user]
    client = PysnmpClient()
    try:
        got = await client.get(Target("127.0.0.1", snmpd), cred(user, auth, priv), [SYS_OBJECT_ID])
        walked = await client.walk(Target("127.0.0.1", snmpd), cred(user, auth, priv),
                                   "1.3.6.1.2.1.1")
    finally:
        await client.close()
    assert got[SYS_OBJECT_ID] == SnmpValue(ValueType.OID, NET_SNMP_LINUX)
    assert (SYS_OBJECT_ID, got[SYS_OBJECT_ID]) in walked.rows


@pytest.mark.parametrize(("user", "wrong_priv"), [
    ("blu256", "AES256C"), ("cis256", "AES256"), ("blu192", "AES192C"), ("cis192", "AES192"),
])
async def test_key_extensions_are_not_interchangeable(snmpd, user, wrong_priv):
    """The other key extension must not work (net-snmp drops what it cannot decrypt)."""
    _, _, auth, _ = USERS[user]
    client = PysnmpClient()
    try:
        with pytest.raises(SnmpError) as err:
            await client.get(Target("127.0.0.1", snmpd), cred(user, auth, wrong_priv),
                             [SYS_OBJECT_ID], Timing(timeout=0.5, retries=0))
    finally:
        await client.close()
    assert err.value.kind in ("timeout", "auth")

"""``fleetroom-agent enroll`` against a real TLS server on 127.0.0.1 (the protocol fake).

Success stores exactly what the server answered plus the keys the server
registered; every failure (token refused, unreachable, untrusted TLS, wrong pin,
existing identity) says why and stores nothing.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import pytest
from fleetroom_agent.enroll import EnrollError, enroll
from fleetroom_agent.identity import IDENTITY_FILENAME, AgentIdentity
from fleetroom_agent.transports.tls import pin_of_certificate
from fleetroom_protocol.keys import encode_key

from agent.tests.test_sender_fakeserver import FakeFleetroom, free_port, make_certs, serve_app

TOKEN = "tok-0123456789abcdef"
AGENT = str(Path(sys.executable).parent / "fleetroom-agent")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


async def test_enroll_stores_the_identity_the_server_registered(certs, tmp_path):
    fake = FakeFleetroom(tokens={TOKEN: ""})
    async with serve_app(fake, certs=certs) as base:
        ident = await enroll(base + "/", TOKEN, tmp_path / "data", ca_file=certs.ca_file,
                             pins=(pin_of_certificate(certs.cert_pem),))
    assert len(fake.enrollments) == 1
    req = fake.enrollments[0]
    (agent_id, registered), = fake.agents.items()
    loaded = AgentIdentity.load(tmp_path / "data")
    assert loaded == ident
    assert loaded.agent_id == agent_id
    assert encode_key(loaded.signing_key.verify_key) == req.signing_key == encode_key(registered)
    assert encode_key(loaded.encryption_key.public_key) == req.encryption_key
    assert bytes(loaded.server_verify_key) == bytes(fake.signing_key.verify_key)
    assert bytes(loaded.server_public_key) == bytes(fake.encryption_key.public_key)
    assert (loaded.tenant, loaded.site, loaded.schedule.command_poll_s) == ("acme", "hq", 60)
    assert loaded.server_url == base  # trailing slash dropped
    assert loaded.ca_file == str(certs.ca_file.resolve())
    assert loaded.pins == (pin_of_certificate(certs.cert_pem),)
    assert stat.S_IMODE((tmp_path / "data" / IDENTITY_FILENAME).stat().st_mode) == 0o600
    assert req.token == TOKEN


async def test_refused_token_shows_the_servers_error_and_stores_nothing(certs, tmp_path):
    fake = FakeFleetroom(tokens={TOKEN: "this token expired on 2030-01-01"})
    async with serve_app(fake, certs=certs) as base:
        with pytest.raises(EnrollError) as info:
            await enroll(base, TOKEN, tmp_path, ca_file=certs.ca_file)
    assert (info.value.code, info.value.status) == ("refused", 403)
    assert "this token expired on 2030-01-01" in str(info.value)
    assert not (tmp_path / IDENTITY_FILENAME).exists()


@pytest.mark.parametrize("case", ["unreachable", "untrusted", "wrong-pin"])
async def test_connection_failures_are_explained(certs, tmp_path, case):
    fake = FakeFleetroom(tokens={TOKEN: ""})
    other = make_certs(tmp_path / "other")
    async with serve_app(fake, certs=certs) as base:
        url, kwargs = base, {"ca_file": certs.ca_file}
        if case == "unreachable":
            url = f"https://127.0.0.1:{free_port()}"
        elif case == "untrusted":
            kwargs = {}
        else:
            kwargs["pins"] = (pin_of_certificate(other.cert_pem),)
        with pytest.raises(EnrollError) as info:
            await enroll(url, TOKEN, tmp_path / "d", **kwargs)
    expected = {"unreachable": ("network", "connection refused"),
                "untrusted": ("tls", "not trusted"),
                "wrong-pin": ("pin", "pin mismatch")}[case]
    assert info.value.code == expected[0]
    assert expected[1] in str(info.value)
    assert fake.enrollments == []  # the token was not spent
    assert not (tmp_path / "d" / IDENTITY_FILENAME).exists()


async def _cli(*args: str, env_extra: dict[str, str] | None = None) -> tuple[int, str, str]:
    env = {**os.environ, **(env_extra or {})}
    proc = await asyncio.create_subprocess_exec(
        AGENT, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_enrolls_refuses_to_overwrite_and_replaces_with_force(certs, tmp_path):
    fake = FakeFleetroom(tokens={TOKEN: "", TOKEN + "-2": ""})
    data = tmp_path / "data"
    async with serve_app(fake, certs=certs) as base:
        common = ["enroll", "--server", base, "--data-dir", str(data),
                  "--ca-file", str(certs.ca_file)]
        code, out, err = await _cli(*common, env_extra={"FLEETROOM_ENROLL_TOKEN": TOKEN})
        assert code == 0, err
        first = AgentIdentity.load(data)
        assert f"enrolled as agent {first.agent_id}" in out
        code, out, err = await _cli(*common, "--token", TOKEN + "-2")
        assert code == 2
        assert "already enrolled" in err
        assert first.agent_id in err
        assert "--force" in err
        assert len(fake.enrollments) == 1  # refused before the token was spent
        code, out, err = await _cli(*common, "--token", TOKEN + "-2", "--force")
        assert code == 0, err
        code, out, err = await _cli(*common, "--token", TOKEN, "--force")  # spent token
        assert code == 1
        assert "token already used" in err
    second = AgentIdentity.load(data)
    assert second.agent_id != first.agent_id
    assert set(fake.agents) == {first.agent_id, second.agent_id}
    backups = sorted(data.glob(IDENTITY_FILENAME + ".replaced-*"))
    assert len(backups) == 1
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert first.agent_id in backups[0].read_text()


async def test_cli_needs_a_data_directory_and_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"FLEETROOM_AGENT_DATA_DIR", "FLEETROOM_ENROLL_TOKEN"}}
    proc = await asyncio.create_subprocess_exec(
        AGENT, "enroll", "--server",
        "https://127.0.0.1:1", "--token", TOKEN, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"--data-dir" in err
    code, _, err_text = await _cli("enroll", "--server", "http://192.0.2.1",
                                   "--data-dir", str(tmp_path), "--token", TOKEN)
    assert code == 2
    assert "plain http" in err_text

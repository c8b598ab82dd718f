"""The real agent code fetching profile bundles from the real server over a socket.

``check_and_apply`` (agent) ↔ ``POST /agent/v1/profiles/latest`` (Django, live
server on 127.0.0.1) with an agent enrolled through the HTTP endpoint.  What the
agent installs is compared with the files the server published.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fleetroom.agents.bundles import publish
from fleetroom.agents.keys import server_keys
from fleetroom.agents.services import do_suspend_agent
from fleetroom.core.scoping import SYSTEM
from fleetroom_agent.identity import AgentIdentity
from fleetroom_agent.profile_update import (
    ProfileUpdateError,
    check_and_apply,
    installed_version,
    load_profiles,
    read_state,
)
from fleetroom_profiles import choose_profile, shipped_profile_dir
from fleetroom_profiles.bundle import files_from_directory
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from server.tests.test_agents_support import FakeAgent, clear_limits, make_tree

pytestmark = [pytest.mark.django_db(transaction=True)]

ACME = """\
name: acme
extends: [generic-printer]
description: Acme printers, published by the server.
match:
  - sysobjectid: 1.3.6.1.4.1.99999
"""


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "server-data"
    settings.DATA_DIR.mkdir()
    clear_limits()
    yield settings.DATA_DIR
    clear_limits()


def identity_of(agent: FakeAgent, url: str, *, key: SigningKey | None = None) -> AgentIdentity:
    return AgentIdentity(
        agent_id=agent.agent_id, server_url=url, signing_key=key or agent.signing_key,
        encryption_key=PrivateKey.generate(), server_verify_key=server_keys().verify_key,
        server_public_key=server_keys().public_key, tenant=agent.enrolled.tenant)


def installed_files(agent_dir: Path) -> dict[str, bytes]:
    state = read_state(agent_dir)
    assert state.active is not None
    return files_from_directory(agent_dir / "profiles" / state.active)


def test_agent_fetches_installs_and_uses_the_published_bundle(client, live_server, tmp_path):
    agent = FakeAgent(client, make_tree()["s1"])
    identity = identity_of(agent, live_server.url)
    agent_dir = tmp_path / "agent-data"

    assert asyncio.run(check_and_apply(identity, agent_dir)) == (
        "profiles are up to date (bundle 0)")  # nothing published yet

    publish(server_keys().signing_key)
    message = asyncio.run(check_and_apply(identity, agent_dir))
    assert message.startswith("installed profile bundle 1 (")
    assert installed_files(agent_dir) == files_from_directory(shipped_profile_dir())
    state = read_state(agent_dir)
    assert state.trusted_time is not None  # the server's signed clock was recorded

    assert asyncio.run(check_and_apply(identity, agent_dir)) == (
        "profiles are up to date (bundle 1)")

    source = tmp_path / "dealer-profiles"
    source.mkdir()
    (source / "acme.yaml").write_text(ACME)
    publish(server_keys().signing_key, source=source)
    assert asyncio.run(check_and_apply(identity, agent_dir)).startswith(
        "installed profile bundle 2 (1 file,")
    profiles = load_profiles(agent_dir)
    match = choose_profile(profiles, "1.3.6.1.4.1.99999.3", "Acme")
    assert match is not None
    assert match.name == "acme"
    assert profiles.profiles["acme"].profile.description == (
        "Acme printers, published by the server.")
    assert installed_files(agent_dir) == {"acme.yaml": ACME.encode()}


def test_the_server_refuses_an_agent_it_cannot_authenticate(client, live_server, tmp_path):
    agent = FakeAgent(client, make_tree()["s1"])
    publish(server_keys().signing_key)
    agent_dir = tmp_path / "agent-data"
    impostor = identity_of(agent, live_server.url, key=SigningKey.generate())
    with pytest.raises(ProfileUpdateError) as caught:
        asyncio.run(check_and_apply(impostor, agent_dir))
    assert caught.value.code == "refused"
    assert "HTTP 401" in caught.value.message
    assert installed_version(agent_dir) == 0
    assert read_state(agent_dir).last_error == caught.value.message

    do_suspend_agent(agent.row, acting_user=SYSTEM)
    with pytest.raises(ProfileUpdateError) as caught:
        asyncio.run(check_and_apply(identity_of(agent, live_server.url), agent_dir))
    assert "HTTP 403" in caught.value.message
    assert installed_version(agent_dir) == 0


def test_the_agent_cli_updates_from_the_server(client, live_server, tmp_path):
    """``fleetroom-agent profiles update`` / ``status`` as an operator runs them."""
    import json
    import os
    import subprocess
    import sys

    agent = FakeAgent(client, make_tree()["s1"])
    agent_dir = tmp_path / "agent-data"
    identity_of(agent, live_server.url).save(agent_dir)
    publish(server_keys().signing_key)
    cli = [str(Path(sys.executable).parent / "fleetroom-agent"), "profiles"]
    env = {**os.environ, "FLEETROOM_AGENT_DATA_DIR": str(agent_dir), "COLUMNS": "200"}
    done = subprocess.run([*cli, "update"], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "installed profile bundle 1" in done.stdout
    again = subprocess.run([*cli, "update"], capture_output=True, text=True, env=env,
                           check=False, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "profiles are up to date (bundle 1)" in again.stdout
    shown = subprocess.run([*cli, "status", "--json"], capture_output=True, text=True,
                           env=env, check=False, timeout=120)
    doc = json.loads(shown.stdout)
    assert (doc["version"], doc["source"], doc["last_result"], doc["expired"]) == (
        1, "server", "profiles are up to date (bundle 1)", False)

"""Profile bundles on the server: ``publish_profiles`` and ``POST /agent/v1/profiles/latest``.

The agents here are real enrolled agents (``FakeAgent``: keys, token, HTTP
enrollment); bundles are checked with the agent's own code
(``fleetroom_profiles.bundle.open_bundle``) against the files shipped in
``packages/profiles``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from fleetroom.agents.bundles import bundle_dir, latest_bundle, publish, stored_bundles
from fleetroom.agents.keys import server_keys
from fleetroom.agents.models import AgentCommand, AgentStatus, CommandStatus, Violation
from fleetroom.agents.services import do_issue_command, do_suspend_agent
from fleetroom.core.scoping import SYSTEM
from fleetroom_profiles import shipped_profile_dir
from fleetroom_profiles.bundle import BundleError, files_from_directory, open_bundle
from fleetroom_protocol.envelope import SERVER, body_bytes, seal, split, verify
from fleetroom_protocol.messages import CONTENT_TYPE, PATH_PROFILES, AgentState, PollBody, Reply
from nacl.signing import SigningKey

from server.tests.test_agents_support import FakeAgent, clear_limits, make_tree

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """Each test gets its own data directory: its own server keys and bundle store."""
    settings.DATA_DIR = tmp_path / "server-data"
    settings.DATA_DIR.mkdir()
    clear_limits()
    yield settings.DATA_DIR
    clear_limits()


@pytest.fixture
def agent(client):
    return FakeAgent(client, make_tree()["s1"])


def publish_cli(*args: str) -> dict:
    out = StringIO()
    call_command("publish_profiles", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def ask(agent: FakeAgent, have: int | None, *, ctr: int | None = None,
        envelope: bytes | None = None):
    body = PollBody(state=AgentState(profiles_version=have)).model_dump_json().encode()
    envelope = envelope or agent.seal(body, kind="poll", ctr=ctr)
    return agent.client.post(PATH_PROFILES, data=envelope, content_type=CONTENT_TYPE,
                             REMOTE_ADDR=agent.ip)


# --- publishing -------------------------------------------------------------------


def test_publish_signs_the_shipped_profiles_with_increasing_versions(data_dir):
    first = publish_cli("--expires-days", "10")
    second = publish_cli()
    assert (first["version"], second["version"]) == (1, 2)
    assert first["key_id"] == server_keys().key_id
    assert Path(first["path"]) == data_dir / "profile-bundles" / "profiles-0000000001.zip"
    bundle = open_bundle(Path(first["path"]).read_bytes(), server_keys().verify_key,
                         installed_version=0, now=datetime.now(UTC))
    assert bundle.files == files_from_directory(shipped_profile_dir())
    assert bundle.manifest.expires_at - bundle.manifest.created_at == timedelta(days=10)
    newest = latest_bundle()
    assert newest is not None
    assert newest.version == 2
    later = open_bundle(newest.read(), server_keys().verify_key, installed_version=1,
                        now=datetime.now(UTC))
    assert later.manifest.expires_at - later.manifest.created_at == timedelta(days=30)


def test_publish_refuses_broken_profiles_and_impossible_expiry(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "acme.yaml").write_text(
        "name: acme\nextends: [generic-printer]\nmatch:\n  - sysobjectid: not-an-oid\n")
    with pytest.raises(CommandError) as caught:
        publish_cli("--source", str(broken))
    assert "nothing published" in str(caught.value)
    assert "acme.yaml:4" in str(caught.value)
    with pytest.raises(CommandError, match="expiry must be 1 to 366 days"):
        publish_cli("--expires-days", "0")
    (broken / "acme.yaml").write_text("name: acme\nabstract: true\ndescription: &x a\n")
    with pytest.raises(CommandError, match="anchors and aliases are not allowed"):
        publish_cli("--source", str(broken))
    assert stored_bundles() == []


def test_concurrent_publishers_never_share_a_version():
    key = server_keys().signing_key
    versions: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            versions.append(publish(key).version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(versions) == [1, 2, 3, 4]
    assert [b.version for b in stored_bundles()] == [1, 2, 3, 4]
    assert not [p for p in bundle_dir().iterdir() if p.name.endswith(".tmp")]


def test_old_bundles_are_pruned():
    key = server_keys().signing_key
    for _ in range(12):
        publish(key)
    assert [b.version for b in stored_bundles()] == list(range(3, 13))


# --- serving ----------------------------------------------------------------------


def test_authenticated_agent_gets_the_newest_bundle_in_a_sealed_reply(agent):
    publish(server_keys().signing_key)
    newest = publish(server_keys().signing_key)
    response = ask(agent, have=0)
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE
    assert response["Cache-Control"] == "no-store"
    sealed = split(response.content)
    verify(sealed, server_keys().verify_key)
    header = sealed.header
    assert (header.sender, header.to, header.kind, header.reply_to) == (
        SERVER, agent.agent_id, "reply", agent.last_ctr)
    data = body_bytes(sealed)
    assert data == newest.read()
    bundle = open_bundle(data, server_keys().verify_key, installed_version=0, now=header.ts)
    assert bundle.version == 2
    assert bundle.files == files_from_directory(shipped_profile_dir())


def test_nothing_newer_is_204(agent):
    assert ask(agent, have=0).status_code == 204  # nothing published yet
    publish(server_keys().signing_key)
    for have in (1, 7):
        response = ask(agent, have=have)
        assert response.status_code == 204
        assert response.content == b""
    assert ask(agent, have=None).status_code == 200  # an agent without any bundle


def test_unauthenticated_requests_never_get_the_bundle(agent):
    publish(server_keys().signing_key)
    body = PollBody(state=AgentState(profiles_version=0)).model_dump_json().encode()
    stranger = SigningKey.generate()
    forged = seal(body, signing_key=stranger, sender=agent.agent_id, to=SERVER, ctr=500,
                  kind="poll")
    unknown = seal(body, signing_key=stranger, sender="00000000-0000-4000-8000-000000000000",
                   to=SERVER, ctr=1, kind="poll")
    for envelope in (forged, unknown):
        response = ask(agent, None, envelope=envelope)
        assert response.status_code == 401
        assert response.content == b""
    response = ask(agent, None, envelope=b"FR1 garbage\n{}\n")
    assert response.status_code == 400
    assert latest_bundle().read() not in response.content
    assert agent.row.policy_violations == 0  # unsigned traffic never counts against an agent


def test_replayed_request_is_a_policy_violation(agent):
    publish(server_keys().signing_key)
    body = PollBody(state=AgentState(profiles_version=0)).model_dump_json().encode()
    envelope = agent.seal(body, kind="poll")
    assert ask(agent, None, envelope=envelope).status_code == 200
    again = ask(agent, None, envelope=envelope)
    assert again.status_code == 403
    assert agent.reply(again).status == "ok"
    row = agent.row
    assert row.policy_violations == 1
    assert row.last_violation == Violation.REPLAYED


def test_profile_requests_share_the_message_counter_window(agent):
    """A counter used for a profile request cannot be reused for a message."""
    publish(server_keys().signing_key)
    assert ask(agent, have=0, ctr=40).status_code == 200
    response = agent.send(agent.poll(ctr=40))
    assert response.status_code == 403
    assert agent.row.last_violation == Violation.REPLAYED
    assert agent.send(agent.poll(ctr=41)).status_code == 200


def test_suspended_agent_is_refused_with_a_signed_reply(agent):
    publish(server_keys().signing_key)
    do_suspend_agent(agent.row, acting_user=SYSTEM)
    response = ask(agent, have=0)
    assert response.status_code == 403
    assert agent.reply(response).status == "suspended"
    assert agent.row.status == AgentStatus.SUSPENDED


def test_fetching_profiles_does_not_take_commands(agent):
    """Commands ride on replies to messages; a profile reply cannot carry them, so
    the profile endpoint must leave them waiting."""
    publish(server_keys().signing_key)
    command = do_issue_command(agent.row, "scan-now", acting_user=SYSTEM)
    assert ask(agent, have=0).status_code == 200
    command.refresh_from_db()
    assert command.status == CommandStatus.PENDING
    reply = agent.reply(agent.send(agent.poll()))
    assert [c.id for c in reply.commands] == [command.command_id]
    assert AgentCommand.objects.get(pk=command.pk).status == CommandStatus.DELIVERED


def test_only_polls_are_answered(agent):
    publish(server_keys().signing_key)
    response = ask(agent, None, envelope=agent.seal(b'{"items":[]}', kind="batch"))
    assert response.status_code == 400
    assert isinstance(agent.reply(response), Reply)


def test_publish_validates_against_the_shipped_profiles(tmp_path):
    """A source directory is checked together with the shipped profiles, as agents load it."""
    source = tmp_path / "extra"
    source.mkdir()
    (source / "acme.yaml").write_text(
        "name: acme\nextends: [generic-printer]\nmatch:\n  - sysobjectid: 1.3.6.1.4.1.99999\n")
    stored = publish(server_keys().signing_key, source=source)
    bundle = open_bundle(stored.read(), server_keys().verify_key, installed_version=0,
                         now=datetime.now(UTC))
    assert list(bundle.files) == ["acme.yaml"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="no profile files"):
        publish(server_keys().signing_key, source=empty)

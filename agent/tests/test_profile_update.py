"""Installing signed profile bundles on the agent: the loader uses them, hostile ones are
refused with the old profiles still active, the swap is atomic (kill -9 at any moment),
and a damaged set rolls back."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleetroom_agent.profile_update import (
    ProfileUpdateError,
    import_bundle,
    install_bundle,
    installed_version,
    load_profiles,
    profiles_root,
    read_state,
    status,
)
from fleetroom_profiles import ProfileError, choose_profile
from fleetroom_profiles.bundle import open_bundle

from packages.profiles.tests.test_bundle_corpus import (
    ACME,
    CORPUS,
    INSTALLED,
    KEY,
    NOW,
    good_bundle,
)

ACME_OID = "1.3.6.1.4.1.99999.7"
AGENT_CLI = str(Path(sys.executable).parent / "fleetroom-agent")


def acme(description: str) -> bytes:
    """The test vendor profile with a description that tells versions apart."""
    return ACME.replace(b"Acme printers (test corpus).", description.encode())


def bundle(version: int, description: str = "v", **kw) -> bytes:
    return good_bundle(version, extra={"vendors/acme.yaml": acme(description)}, **kw)


def install(data_dir: Path, data: bytes, **kw) -> str:
    return install_bundle(data, data_dir, KEY.verify_key, now=kw.pop("now", NOW), **kw)


def active_description(data_dir: Path) -> str | None:
    profiles = load_profiles(data_dir)
    lp = profiles.profiles.get("acme")
    return None if lp is None else lp.profile.description


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (state.json timestamps excluded)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("state.json", ".lock")}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent-data"


def test_without_a_bundle_the_shipped_profiles_are_used(data_dir):
    assert installed_version(data_dir) == 0
    profiles = load_profiles(data_dir)
    assert "acme" not in profiles.profiles
    assert "hp" in profiles.profiles
    assert status(data_dir)["version"] == 0


def test_installed_bundle_is_what_the_loader_and_matcher_use(data_dir):
    message = install(data_dir, bundle(INSTALLED, "Acme, bundle five"))
    assert message.startswith(f"installed profile bundle {INSTALLED} (")
    assert installed_version(data_dir) == INSTALLED
    profiles = load_profiles(data_dir)
    loaded = profiles.profiles["acme"]
    assert loaded.profile.description == "Acme, bundle five"
    assert Path(loaded.path) == profiles_root(data_dir) / "v0000000005" / "vendors" / "acme.yaml"
    match = choose_profile(profiles, ACME_OID, "Acme Laser 9000")
    assert match is not None
    assert match.name == "acme"
    # Shipped profiles were replaced by the bundle's copies (later directory wins).
    assert Path(profiles.profiles["hp"].path).is_relative_to(profiles_root(data_dir))
    state = read_state(data_dir)
    expected = open_bundle(bundle(INSTALLED, "Acme, bundle five"), KEY.verify_key,
                           installed_version=0, now=NOW)
    assert state.manifest_sha256 == expected.manifest_sha256
    assert state.files == len(expected.files)
    assert state.expires_at == NOW + timedelta(days=30)


def test_next_bundle_replaces_the_set_and_keeps_the_previous_one(data_dir):
    install(data_dir, bundle(5, "five"))
    install(data_dir, bundle(6, "six"))
    assert active_description(data_dir) == "six"
    state = read_state(data_dir)
    assert (state.version, state.active, state.previous, state.previous_version) == (
        6, "v0000000006", "v0000000005", 5)
    install(data_dir, bundle(9, "nine"))
    dirs = sorted(p.name for p in profiles_root(data_dir).iterdir() if p.is_dir())
    assert dirs == ["v0000000006", "v0000000009"]  # older sets are pruned


def test_cli_loader_picks_up_the_bundle_from_the_data_directory(data_dir):
    install(data_dir, bundle(5, "from the bundle"))
    env = {**os.environ, "FLEETROOM_AGENT_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    out = subprocess.run([AGENT_CLI, "profiles", "list"],
                         capture_output=True, text=True, env=env, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "acme" in out.stdout
    assert "1.3.6.1.4.1.99999" in out.stdout
    env.pop("FLEETROOM_AGENT_DATA_DIR")
    out = subprocess.run([AGENT_CLI, "profiles", "list"],
                         capture_output=True, text=True, env=env, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "acme" not in out.stdout


@pytest.fixture(scope="module")
def installed_template(tmp_path_factory) -> Path:
    """A data directory with bundle 5 installed, copied for each hostile case."""
    template = tmp_path_factory.mktemp("template") / "agent-data"
    install(template, bundle(INSTALLED, "the good old set"))
    return template


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_bundle_is_refused_and_the_old_profiles_stay(data_dir, installed_template,
                                                             case):
    shutil.copytree(installed_template, data_dir)
    before = tree(profiles_root(data_dir))
    started = time.perf_counter()
    with pytest.raises(ProfileUpdateError) as caught:
        install(data_dir, case.data)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{case.name} took {elapsed:.2f} s"
    assert caught.value.code == case.code, caught.value.message
    assert case.words in caught.value.message
    assert caught.value.message.startswith("profile bundle refused: ")
    assert tree(profiles_root(data_dir)) == before  # nothing written, nothing left behind
    assert installed_version(data_dir) == INSTALLED
    assert active_description(data_dir) == "the good old set"
    assert read_state(data_dir).last_error == caught.value.message


def test_profiles_that_do_not_resolve_are_refused_after_staging(data_dir):
    """``extends`` of an unknown profile passes the per-file checks; loading the staged
    set with the real loader catches it, and the staging directory is removed."""
    install(data_dir, bundle(5, "old"))
    before = tree(profiles_root(data_dir))
    orphan = ACME.replace(b"name: acme", b"name: orphan").replace(
        b"extends: [generic-printer]", b"extends: [no-such-parent]")
    data = good_bundle(6, extra={"vendors/orphan.yaml": orphan})
    with pytest.raises(ProfileUpdateError) as caught:
        install(data_dir, data)
    assert caught.value.code == "invalid-profile"
    assert "vendors/orphan.yaml" in caught.value.message
    assert "extends unknown profile 'no-such-parent'" in caught.value.message
    assert tree(profiles_root(data_dir)) == before
    assert active_description(data_dir) == "old"


def test_a_bundle_that_breaks_local_override_profiles_is_refused(data_dir, tmp_path):
    """Local overrides load after the bundle; a bundle that removes what they extend
    would break them, so it is refused before the swap."""
    local = tmp_path / "local"
    local.mkdir()
    (local / "site-acme.yaml").write_bytes(
        ACME.replace(b"name: acme", b"name: site-acme").replace(
            b"extends: [generic-printer]", b"extends: [acme]"))
    install(data_dir, bundle(5, "with acme"), extra_dirs=[local])
    assert "site-acme" in load_profiles(data_dir, [local]).profiles
    with pytest.raises(ProfileUpdateError) as caught:
        install(data_dir, good_bundle(6), extra_dirs=[local])  # no acme.yaml in it
    assert "extends unknown profile 'acme'" in caught.value.message
    assert installed_version(data_dir) == 5
    assert load_profiles(data_dir, [local]).profiles["acme"].profile.description == "with acme"


def test_damaged_active_set_rolls_back_to_the_previous_then_to_shipped(data_dir):
    install(data_dir, bundle(5, "five"))
    install(data_dir, bundle(6, "six"))
    damaged = profiles_root(data_dir) / "v0000000006" / "vendors" / "acme.yaml"
    damaged.write_bytes(damaged.read_bytes() + b"# edited by hand\n")
    assert active_description(data_dir) == "five"
    state = read_state(data_dir)
    assert (state.version, state.active, state.previous) == (5, "v0000000005", None)
    assert state.last_error is not None
    assert "rolled back to bundle 5" in state.last_error
    assert "v0000000006/vendors/acme.yaml was changed after installation" in state.last_error
    # The newest bundle can be installed again (the server will offer it).
    install(data_dir, bundle(6, "six again"))
    assert active_description(data_dir) == "six again"
    # Both sets damaged (one by a stray file): the shipped profiles, and the state says so.
    (profiles_root(data_dir) / "v0000000006" / "vendors" / "stray.yaml").write_bytes(ACME)
    (profiles_root(data_dir) / "v0000000005" / "manifest.json").unlink()
    profiles = load_profiles(data_dir)
    assert "acme" not in profiles.profiles
    assert Path(profiles.profiles["hp"].path).is_relative_to(
        Path(__file__).parents[2] / "packages" / "profiles")
    state = read_state(data_dir)
    assert state.version == 0
    assert "v0000000006/vendors/stray.yaml is not part of the installed bundle" in (
        state.last_error or "")


def test_broken_local_directory_is_not_blamed_on_the_bundle(data_dir, tmp_path):
    install(data_dir, bundle(5, "five"))
    local = tmp_path / "local"
    local.mkdir()
    (local / "bad.yaml").write_text("name: bad\nmatch: [{sysobjectid: not-an-oid}]\n")
    with pytest.raises(ProfileError) as caught:
        load_profiles(data_dir, [local])
    assert str(local / "bad.yaml") in str(caught.value)
    assert read_state(data_dir).version == 5
    assert read_state(data_dir).last_error is None


def test_manual_import_judges_expiry_by_the_newest_trusted_time(data_dir, tmp_path):
    file = tmp_path / "profiles-0000000005.zip"
    file.write_bytes(bundle(5, "five"))  # created NOW, expires NOW + 30 days
    # A clock set back cannot go below the server time the agent has already seen.
    root = profiles_root(data_dir)
    root.mkdir(parents=True)
    (root / "state.json").write_text(json.dumps(
        {"trusted_time": (NOW + timedelta(days=31)).isoformat()}))
    with pytest.raises(ProfileUpdateError) as caught:
        import_bundle(file, data_dir, KEY.verify_key, now=NOW + timedelta(days=1))
    assert caught.value.code == "expired"
    assert "time used: 2025-07-02 12:00 UTC" in caught.value.message
    (root / "state.json").unlink()
    # A local clock far ahead is reported with the time it used.
    with pytest.raises(ProfileUpdateError) as caught:
        import_bundle(file, data_dir, KEY.verify_key, now=NOW + timedelta(days=400))
    assert "time used: 2026-07-06 12:00 UTC" in caught.value.message
    # A plausible clock: installed.
    message = import_bundle(file, data_dir, KEY.verify_key, now=NOW + timedelta(days=2))
    assert message.startswith("installed profile bundle 5")
    assert read_state(data_dir).source == "file profiles-0000000005.zip"


def test_import_of_a_missing_or_unreadable_file_is_a_clear_error(data_dir, tmp_path):
    with pytest.raises(ProfileUpdateError, match=r"cannot read .*nothing\.zip"):
        import_bundle(tmp_path / "nothing.zip", data_dir, KEY.verify_key)


KILLER = """
import sys
from datetime import datetime
from pathlib import Path
from fleetroom_agent.profile_update import install_bundle
from packages.profiles.tests.test_bundle_corpus import KEY
data = Path(sys.argv[2]).read_bytes()
print("ready", flush=True)
install_bundle(data, Path(sys.argv[1]), KEY.verify_key,
               now=datetime.fromisoformat(sys.argv[3]))
print("done", flush=True)
"""


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_the_old_or_the_new_set_complete(data_dir, tmp_path):
    """A real process installing bundle 6 over bundle 5 is killed at random moments;
    afterwards the agent loads either set, complete and verified, never a mixture."""
    probe = tmp_path / "probe"
    install(probe, bundle(5, "five"))
    started = time.perf_counter()
    install(probe, bundle(6, "six"))
    duration = time.perf_counter() - started  # how long an install takes on this machine
    install(data_dir, bundle(5, "five"))
    new_file = tmp_path / "six.zip"
    new_file.write_bytes(bundle(6, "six"))
    rng = random.Random(4)
    outcomes = []
    repo = Path(__file__).parents[2]
    for _round in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLER, str(data_dir), str(new_file), NOW.isoformat()],
            stdout=subprocess.PIPE, text=True, cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)})
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 1.3 * duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        description = active_description(data_dir)
        version = installed_version(data_dir)
        assert (version, description) in {(5, "five"), (6, "six")}, (version, description)
        outcomes.append(version)
        state = read_state(data_dir)
        assert state.last_error is None or "refused" in state.last_error
        if version == 6:  # start the next round from bundle 5 again
            for p in profiles_root(data_dir).iterdir():
                if p.is_dir():
                    shutil.rmtree(p)
            (profiles_root(data_dir) / "state.json").unlink()
            install(data_dir, bundle(5, "five"))
    # Whatever the timing, a later install cleans up and succeeds.
    if installed_version(data_dir) == 5:
        install(data_dir, bundle(6, "six"))
    assert active_description(data_dir) == "six"
    assert not [p for p in profiles_root(data_dir).iterdir() if p.name.startswith(".staging")]
    print("outcomes (version after kill):", outcomes)


def test_cli_import_and_status(data_dir, tmp_path):
    """``fleetroom-agent profiles import FILE`` and ``profiles status --json``, end to end
    with an identity that trusts the test server key (bundle made with the real clock)."""
    from fleetroom_agent.identity import AgentIdentity
    from nacl.public import PrivateKey
    from nacl.signing import SigningKey

    AgentIdentity(agent_id="6f1c0c9e-0000-4000-8000-000000000001",
                  server_url="https://fleetroom.example", signing_key=SigningKey.generate(),
                  encryption_key=PrivateKey.generate(), server_verify_key=KEY.verify_key,
                  server_public_key=PrivateKey.generate().public_key, tenant="t").save(data_dir)
    file = tmp_path / "bundle.zip"
    file.write_bytes(bundle(7, "seven", created=datetime.now(UTC).replace(microsecond=0)))
    env = {**os.environ, "COLUMNS": "200"}
    cli = [AGENT_CLI, "profiles"]
    out = subprocess.run([*cli, "import", str(file), "--data-dir", str(data_dir)],
                         capture_output=True, text=True, env=env, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "installed profile bundle 7" in out.stdout
    again = subprocess.run([*cli, "import", str(file), "--data-dir", str(data_dir)],
                           capture_output=True, text=True, env=env, check=False, timeout=60)
    assert again.returncode == 1
    assert "bundle version 7 is already installed" in again.stderr
    assert "the profiles in use stay bundle 7" in again.stderr
    shown = subprocess.run([*cli, "status", "--json", "--data-dir", str(data_dir)],
                           capture_output=True, text=True, env=env, check=False, timeout=60)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["version"] == 7
    assert doc["expired"] is False
    assert doc["directory"] == str(profiles_root(data_dir) / "v0000000007")
    assert doc["last_error"] == "profile bundle refused: bundle version 7 is already installed"


def test_an_edited_state_file_cannot_point_outside_the_profiles_directory(data_dir, tmp_path):
    install(data_dir, bundle(5, "five"))
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(profiles_root(data_dir) / "v0000000005", elsewhere)
    state_file = profiles_root(data_dir) / "state.json"
    doc = json.loads(state_file.read_text())
    doc["active"] = "../../elsewhere"
    state_file.write_text(json.dumps(doc))
    profiles = load_profiles(data_dir)
    assert "acme" not in profiles.profiles  # shipped profiles, not the planted directory
    assert installed_version(data_dir) == 0
    assert "unreadable" in (read_state(data_dir).last_error or "")

"""The ``fleetroom-agent`` command line as a technician runs it (real processes,
real snmpsim on loopback, the project's SYNTHETIC recordings)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator, V3User
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC_DIR
from fleetroom_protocol import Reading

from tests.support import recordings as rec

AGENT = str(Path(sys.executable).parent / "fleetroom-agent")
V3 = V3User("ops", "SHA256", "cli-auth-secret-1", "AES256BLMT", "cli-priv-secret-1")


@pytest.fixture(scope="module")
def sim():
    with SnmpSimulator([SYNTHETIC_DIR], v3_users=[V3]) as s:
        yield s


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_probe_json_is_exactly_one_document(sim):
    p = run("probe", sim.endpoint, "--community", "demo-ricoh-imc3000", "--json")
    assert p.returncode == 0, p.stderr
    reading = Reading.model_validate_json(p.stdout)  # one document, nothing else
    r = rec.load(SYNTHETIC_DIR / "demo-ricoh-imc3000.snmprec")
    assert reading.identity.sys_descr == rec.text(r, "1.3.6.1.2.1.1.1.0")
    assert reading.identity.serial == rec.text(r, "1.3.6.1.2.1.43.5.1.1.17.1")
    assert reading.identity.vendor == "Ricoh"
    assert reading.profile is not None
    assert reading.profile.name == "ricoh"


def test_probe_human_output_names_the_profile_and_why(sim):
    p = run("probe", sim.endpoint, "-c", "demo-gestetner-mpc2504")
    assert p.returncode == 0, p.stderr
    assert "Profile: gestetner" in p.stdout
    assert "why:" in p.stdout


def test_v3_credentials_file_tried_in_order_and_secrets_never_printed(sim, tmp_path):
    creds = tmp_path / "creds.toml"
    creds.write_text(f"""
[[credentials]]
name = "wrong-v3"
version = "3"
user = "ops"
auth_proto = "SHA256"
auth_key = "not-the-right-key"
priv_proto = "AES256"
priv_key = "not-the-right-key"

[[credentials]]
name = "site-v3"
version = "3"
user = "ops"
auth_proto = "SHA256"
auth_key = "{V3.auth_key}"
priv_proto = "AES256"
priv_key = "{V3.priv_key}"
context = "demo-xerox-c405"
""")
    p = run("probe", sim.endpoint, "--credentials", str(creds), "--json", "--timeout", "1")
    assert p.returncode == 0, p.stderr
    reading = Reading.model_validate_json(p.stdout)
    assert reading.snmp_version == "3"
    assert reading.credential == "site-v3"
    assert reading.identity.vendor == "Xerox"
    for secret in ("not-the-right-key", V3.auth_key, V3.priv_key):
        assert secret not in p.stdout
        assert secret not in p.stderr


def test_bad_credential_options_are_a_clear_error(sim):
    p = run("probe", sim.endpoint, "--snmp-version", "3", "--auth-key", "short")
    assert p.returncode == 2
    assert "user" in p.stderr
    assert "short" not in p.stderr


def test_walk_redact_records_a_replayable_device(sim, tmp_path):
    out = tmp_path / "new-model.snmprec"
    p = run("walk", sim.endpoint, "-c", "demo-hp-clj-m479", "--redact", "--out", str(out))
    assert p.returncode == 0, p.stderr
    original = rec.load(SYNTHETIC_DIR / "demo-hp-clj-m479.snmprec")
    recorded = rec.load(out)
    serial_oid = "1.3.6.1.2.1.43.5.1.1.17.1"
    assert rec.text(recorded, serial_oid) == "REDACTED"
    assert rec.text(original, serial_oid) not in out.read_text()
    for oid in ("1.3.6.1.2.1.1.4.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.6.0"):
        assert rec.text(recorded, oid) in ("REDACTED", "")
    # Everything else is recorded as the device gave it.
    assert set(recorded) == set(original)
    # The demo life count rises over time (snmpsim numeric variation from "initial").
    life = "1.3.6.1.2.1.43.10.2.1.4.1.1"
    assert int(recorded[life][1]) >= rec.integer(original, life)  # type: ignore[operator]
    # The recording can be profiled offline and served by snmpsim again.
    offline = run("probe", "recorded", "--recording", str(out), "--json")
    assert offline.returncode == 0, offline.stderr
    assert Reading.model_validate_json(offline.stdout).identity.serial == "REDACTED"
    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    shutil.copy(out, replay_dir / "replayed.snmprec")
    with SnmpSimulator([replay_dir]) as replay:
        again = run("probe", replay.endpoint, "-c", "replayed", "--json")
    assert again.returncode == 0, again.stderr
    assert Reading.model_validate_json(again.stdout).identity.model == \
        Reading.model_validate_json(offline.stdout).identity.model


def test_profiles_check_names_file_and_line(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "acme.yaml").write_text(
        "name: acme\nextends: [generic-printer]\nmatch:\n  - sysobjectid: 1.3.6.1.4.1.99999\n")
    p = run("profiles", "check", str(good))
    assert p.returncode == 0, p.stderr
    assert "1 profile(s) OK" in p.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.yaml").write_text(
        "name: broken\nextends: [generic-printer]\nmatch:\n  - sysobjectid: 1.3.6.x\n")
    p = run("profiles", "check", str(bad))
    assert p.returncode == 1
    assert f"{bad / 'broken.yaml'}:4" in p.stderr
    assert "not a numeric OID" in p.stderr


def test_broken_extra_profiles_stop_a_scan_with_a_clear_message(tmp_path, sim):
    (tmp_path / "x.yaml").write_text("name: x\nmatch: [\n")
    p = run("probe", sim.endpoint, "-c", "demo-hp-clj-m479", "--profiles", str(tmp_path))
    assert p.returncode == 2
    assert "x.yaml" in p.stderr
    assert "YAML syntax" in p.stderr


def test_scan_refuses_too_many_addresses_before_sending_anything():
    p = run("scan", "10.0.0.0/8", "--timeout", "0.1")
    assert p.returncode == 2
    assert "16,777,216" in p.stderr


def test_scan_json_one_reading_per_line(sim):
    p = run("scan", sim.endpoint, "-c", "demo-canon-c5535", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["identity"]["vendor"] == "Canon"


def test_scan_over_ipv6_loopback():
    with SnmpSimulator([SYNTHETIC_DIR], host="::1") as v6:
        p = run("scan", v6.endpoint, "-c", "demo-sharp-mx3071", "--json")
    assert p.returncode == 0, p.stderr
    reading = Reading.model_validate_json(p.stdout)
    assert reading.identity.ip == "::1"
    assert reading.identity.vendor == "Sharp"


def test_hostname_target_is_resolved_once_and_kept(sim):
    p = run("scan", f"localhost:{sim.port}", "-c", "demo-lexmark-ms621", "--json")
    assert p.returncode == 0, p.stderr
    reading = Reading.model_validate_json(p.stdout)
    assert reading.identity.hostname == "localhost"
    assert reading.identity.ip in {"127.0.0.1", "::1"}

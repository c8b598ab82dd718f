"""agent.toml: strict parsing, secrets by reference, the allowlist, the loopback-only page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleetroom_agent.runtime.allowlist import Allowlist
from fleetroom_agent.runtime.config import (
    REDACTED,
    ConfigError,
    load_config,
    parse_config,
    resolve_data_dir,
)
from fleetroom_agent.snmp.types import Target

BASE = """
[scan]
targets = ["10.1.0.0/24", "10.1.5.20-40"]

[[credentials]]
name = "public"
version = "2c"
community = "public"
"""

AUTH = "auth-Secret-4711"
PRIV = "priv-Secret-0815"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_minimal_config_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.file.scan.targets == ["10.1.0.0/24", "10.1.5.20-40"]
    assert [s.credential.name for s in cfg.credentials] == ["public"]
    assert cfg.file.transports.order == ["https", "mqtt", "email"]
    assert cfg.file.status_page.bind == "127.0.0.1"
    assert cfg.budget_bytes == 256 * 1024 * 1024
    # No [policy] allowlist: exactly the scan targets are allowed.
    assert cfg.allowlist.source == "scan.targets"
    assert cfg.allowlist.permits(Target("10.1.0.7"))
    assert cfg.allowlist.permits(Target("10.1.5.40"))
    assert not cfg.allowlist.permits(Target("10.1.5.41"))
    assert not cfg.allowlist.permits(Target("10.9.9.9"))


@pytest.mark.parametrize(("text", "key"), [
    (BASE.replace("[scan]\n", "[scan]\nrnages = 1\n"), "scan.rnages"),
    ("colour = 'blue'\n" + BASE, "colour"),
    (BASE + "[status_page]\npasword = 'x'\n", "status_page.pasword"),
    (BASE + "[[credentials]]\nname = 'b'\ncomunity = 'x'\n", "credentials[2].comunity"),
    (BASE + "[transports]\nordr = ['https']\n", "transports.ordr"),
])
def test_unknown_keys_are_errors_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert f"unknown key '{key}'" in str(err.value)
    assert str(tmp_path / "agent.toml") in str(err.value)


def test_wrong_types_are_not_coerced(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + '[status_page]\nport = "8765"\n'))
    assert "status_page.port" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + "[outbox]\nbudget_mb = -1\n"))
    assert "outbox.budget_mb" in str(err.value)


def test_toml_syntax_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + "[scan\n"))
    assert "agent.toml" in str(err.value)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.5", "localhost", "::1"])
def test_status_page_binds_loopback_only(tmp_path, bind):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + f'[status_page]\nbind = "{bind}"\n'))
    assert "127.0.0.1 only" in str(err.value)


def test_explicit_allowlist_and_targets_outside_it(tmp_path):
    text = BASE + '[policy]\nallowlist = ["10.1.0.0/16"]\n'
    cfg = load_config(write(tmp_path, text))
    assert cfg.allowlist.permits(Target("10.1.200.3"))
    assert not cfg.allowlist.permits(Target("10.9.9.9"))
    assert cfg.allowlist.check_spec("10.9.9.9") is not None
    assert cfg.allowlist.check_spec("10.1.3.0/24") is None
    assert "outside the local allowlist" in (cfg.allowlist.check_spec("10.0.0.0/8") or "")
    bad = BASE.replace('"10.1.5.20-40"', '"10.2.0.1"') + '[policy]\nallowlist = ["10.1.0.0/16"]\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, bad))
    assert "10.2.0.1" in str(err.value)
    assert "outside the local allowlist" in str(err.value)


def test_allowlist_refuses_hostnames_and_honours_exclusions(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + '[policy]\nallowlist = ["printer.example"]\n'))
    assert "not hostnames" in str(err.value)
    text = BASE.replace('[scan]\n', '[scan]\nexclude = ["10.1.0.9"]\n')
    cfg = load_config(write(tmp_path, text))
    assert cfg.allowlist.permits(Target("10.1.0.8"))
    assert not cfg.allowlist.permits(Target("10.1.0.9"))


def test_allowlist_handles_ipv6_and_mapped_addresses():
    allow = Allowlist.build(["2001:db8::/120", "10.0.0.0/30"])
    assert allow.permits(Target("2001:db8::42"))
    assert not allow.permits(Target("2001:db8::1:0"))
    assert allow.permits(Target("::ffff:10.0.0.2"))
    assert not allow.permits(Target("not-an-ip"))


def test_policy_commands_and_transport_order_are_checked(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + '[policy]\ncommands = ["scan-now", "reboot"]\n'))
    assert "reboot" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + '[transports]\norder = ["https", "https"]\n'))
    assert "once" in str(err.value)
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, BASE + '[transports]\norder = ["pigeon"]\n'))


def test_at_least_one_credential(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, '[scan]\ntargets = ["10.0.0.1"]\n'))
    assert "[[credentials]]" in str(err.value)


V3 = """
[[credentials]]
name = "v3"
version = "3"
user = "ops"
auth_proto = "SHA256"
priv_proto = "AES256"
"""


def test_secrets_from_environment_and_private_file(tmp_path, monkeypatch):
    key_file = tmp_path / "priv.key"
    key_file.write_text(PRIV + "\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("TEST_FR_AUTH", AUTH)
    text = BASE + V3 + 'auth_key = { env = "TEST_FR_AUTH" }\npriv_key = { file = "priv.key" }\n'
    cfg = load_config(write(tmp_path, text, 0o644))
    cred = cfg.credentials[1].credential
    assert (cred.auth_key, cred.priv_key) == (AUTH, PRIV)  # trailing newline removed
    red = cfg.redacted()
    assert red["credentials"][1]["auth_key"] == {"env": "TEST_FR_AUTH"}
    assert red["credentials"][0]["community"] == REDACTED
    for secret in (AUTH, PRIV):
        assert secret not in repr(red)
        assert secret not in repr(cfg.credentials)


def test_secret_file_readable_by_others_is_refused(tmp_path):
    key_file = tmp_path / "priv.key"
    key_file.write_text(PRIV)
    key_file.chmod(0o644)
    text = BASE + V3 + f'auth_key = "{AUTH}"\npriv_key = {{ file = "priv.key" }}\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "readable by others" in str(err.value)
    assert "chmod 600" in str(err.value)
    assert PRIV not in str(err.value)
    assert AUTH not in str(err.value)


def test_missing_env_secret_names_the_variable_only(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_FR_NOPE", raising=False)
    text = BASE + V3 + 'auth_key = { env = "TEST_FR_NOPE" }\npriv_key = { env = "TEST_FR_NOPE" }\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "TEST_FR_NOPE is not set" in str(err.value)


def test_literal_secrets_in_a_world_readable_config_are_refused(tmp_path):
    text = BASE + V3 + f'auth_key = "{AUTH}"\npriv_key = "{PRIV}"\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text, 0o644))
    assert "every user can read it" in str(err.value)
    assert AUTH not in str(err.value)
    cfg = load_config(write(tmp_path, text, 0o640))
    assert cfg.credentials[1].credential.auth_key == AUTH


def test_bad_credential_is_named_without_the_secret(tmp_path):
    text = BASE + V3 + 'auth_key = "short"\npriv_key = "also"\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "credentials[2] (v3)" in str(err.value)
    assert "short" not in str(err.value).replace("at least", "")


def test_email_transport_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_FR_SMTP", "smtp-pass-1")
    text = BASE + ('[transports.email]\nhost = "mail.example.com"\nusername = "agent"\n'
                   'password = { env = "TEST_FR_SMTP" }\nmail_from = "agent@example.com"\n')
    cfg = load_config(write(tmp_path, text))
    assert cfg.smtp is not None
    assert cfg.smtp.host == "mail.example.com"
    assert cfg.smtp.password is not None
    assert cfg.smtp.password.get_secret_value() == "smtp-pass-1"
    plain = text.replace('host = "mail.example.com"',
                         'host = "mail.example.com"\nsecurity = "none"')
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, plain))
    assert "plain SMTP" in str(err.value)


def test_local_schedule_bounds(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "[schedule]\nmax_status_poll_s = 30\n"))
    assert cfg.file.schedule.max_status_poll_s == 30
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + "[schedule]\nmax_status_poll_s = 1\n"))
    assert "schedule.max_status_poll_s" in str(err.value)
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, BASE + '[schedule]\nprofile_check = "25:00"\n'))


def test_data_dir_precedence(tmp_path, monkeypatch):
    cfg = load_config(write(tmp_path, 'data_dir = "state"\n' + BASE))
    monkeypatch.delenv("FLEETROOM_AGENT_DATA_DIR", raising=False)
    assert resolve_data_dir(None, cfg) == (tmp_path / "state").resolve()
    monkeypatch.setenv("FLEETROOM_AGENT_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None, cfg) == (tmp_path / "env").resolve()
    assert resolve_data_dir(tmp_path / "cli", cfg) == (tmp_path / "cli").resolve()
    monkeypatch.delenv("FLEETROOM_AGENT_DATA_DIR")
    with pytest.raises(ConfigError):
        resolve_data_dir(None, parse_config(BASE))


def test_targets_are_validated(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE.replace('"10.1.5.20-40"', '"10.1.5.300"')))
    assert "10.1.5.300" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE.replace('"10.1.0.0/24"', '"10.0.0.0/8"')))
    assert "scan.targets" in str(err.value)


def test_secret_file_must_exist(tmp_path):
    text = BASE + V3 + f'auth_key = "{AUTH}"\npriv_key = {{ file = "{tmp_path}/none" }}\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "cannot read secret file" in str(err.value)
    assert os.fspath(tmp_path / "none") in str(err.value)


def test_delivery_settings_are_parsed_and_bounded(tmp_path):
    """[transports] batch_items / batch_kb / backoff_cap_s (passed to the Sender by run)."""
    from fleetroom_agent.runtime.config import ConfigError, parse_config

    creds = '[[credentials]]\nname = "public"\nversion = "2c"\ncommunity = "public"\n'
    cfg = parse_config("[transports]\nbatch_items = 50\nbatch_kb = 64\nbackoff_cap_s = 5\n"
                       + creds, tmp_path / "agent.toml")
    assert cfg.file.transports.batch_items == 50
    assert cfg.file.transports.batch_kb == 64
    assert cfg.file.transports.backoff_cap_s == 5
    with pytest.raises(ConfigError, match="batch_items"):
        parse_config("[transports]\nbatch_items = 0\n" + creds, tmp_path / "agent.toml")
    with pytest.raises(ConfigError, match="backoff_cap_s"):
        parse_config("[transports]\nbackoff_cap_s = 0.1\n" + creds, tmp_path / "agent.toml")

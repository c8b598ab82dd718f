"""Configuration is strict: a wrong value stops start-up with a clear message."""

from __future__ import annotations

import pytest
from fleetroom import config

KEY = "k" * 60


def test_defaults_and_env_override(tmp_path):
    env = {"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": KEY,
           "FLEETROOM_BIND": "127.0.0.1:9001", "FLEETROOM_SECURITY_HTTPS": "true",
           "FLEETROOM_ALLOWED_HOSTS": "a.example, b.example"}
    cfg = config.load(env)
    assert cfg.bind == "127.0.0.1:9001"
    assert cfg.security.https is True
    assert cfg.allowed_hosts == ["a.example", "b.example"]
    assert cfg.database.url is None  # SQLite by default


def test_toml_file_then_environment(tmp_path):
    (tmp_path / config.CONFIG_FILE).write_text(
        f'secret_key = "{KEY}"\nbind = "127.0.0.1:7000"\n[worker]\nworkers = 3\n')
    cfg = config.load({"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_WORKER_WORKERS": "4"})
    assert cfg.bind == "127.0.0.1:7000"
    assert cfg.worker.workers == 4


@pytest.mark.parametrize(("env", "message"), [
    ({"FLEETROOM_DEBUG": "yes"}, "must be true or false"),
    ({"FLEETROOM_BOGUS": "1"}, "unknown environment variable FLEETROOM_BOGUS"),
    ({"FLEETROOM_WORKER_WORKERS": "many"}, "worker.workers"),
    ({"FLEETROOM_DATABASE_URL": "mysql://x"}, "only postgresql"),
])
def test_wrong_values_stop_start_up(tmp_path, env, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load({"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": KEY, **env})


def test_unknown_toml_key_is_an_error(tmp_path):
    (tmp_path / config.CONFIG_FILE).write_text(f'secret_key = "{KEY}"\nbnd = "x"\n')
    with pytest.raises(config.ConfigError, match="bnd"):
        config.load({"FLEETROOM_DATA_DIR": str(tmp_path)})


def test_missing_secret_says_how_to_fix(tmp_path):
    with pytest.raises(config.ConfigError, match="fleetroom init"):
        config.load({"FLEETROOM_DATA_DIR": str(tmp_path)})


def test_agent_variables_are_not_server_settings(tmp_path):
    cfg = config.load({"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": KEY,
                       "FLEETROOM_SNMP_AUTH_KEY": "x", "FLEETROOM_SHARED": "/x"})
    assert cfg.secret_key == KEY


def test_starter_file_is_valid_and_secret_is_fresh(tmp_path):
    a, b = config.starter_toml(), config.starter_toml()
    assert a != b
    (tmp_path / config.CONFIG_FILE).write_text(a)
    assert len(config.load({"FLEETROOM_DATA_DIR": str(tmp_path)}).secret_key) >= 50

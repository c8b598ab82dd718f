"""Configuration is strict: a wrong value stops start-up with a clear message."""

from __future__ import annotations

import re

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


# --- sections added for fleet history, mail and the shared cache ----------------------

def test_fleet_mail_cache_sections_from_toml_and_env(tmp_path):
    (tmp_path / config.CONFIG_FILE).write_text(
        'secret_key = "' + "s" * 60 + '"\n'
        "[fleet]\nraw_retention_days = 30\n"
        '[mail]\nhost = "smtp.example.org"\nsecurity = "tls"\nport = 465\n'
        '[cache]\nbackend = "redis"\n', encoding="utf-8")
    cfg = config.load({"FLEETROOM_DATA_DIR": str(tmp_path),
                       "FLEETROOM_FLEET_NOT_REPORTING_HOURS": "48",
                       "FLEETROOM_SECURITY_MFA_REQUIRED_FOR_ALL": "true"})
    assert cfg.fleet.raw_retention_days == 30
    assert cfg.fleet.not_reporting_hours == 48
    assert cfg.mail.host == "smtp.example.org"
    assert cfg.mail.port == 465
    assert cfg.mail.security == "tls"
    assert cfg.cache.backend == "redis"
    assert cfg.security.mfa_required_for_all is True


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("FLEETROOM_FLEET_RAW_RETENTION_DAYS", "0", "fleet.raw_retention_days"),
    ("FLEETROOM_MAIL_SECURITY", "ssl", "mail.security"),
    ("FLEETROOM_CACHE_BACKEND", "memcached", "cache.backend"),
    ("FLEETROOM_SECURITY_MFA_REQUIRED_FOR_ALL", "yes", "FLEETROOM_SECURITY_MFA_REQUIRED_FOR_ALL"),
    ("FLEETROOM_MAIL_HOSTNAME", "x", "unknown environment variable FLEETROOM_MAIL_HOSTNAME"),
])
def test_new_sections_refuse_wrong_values(tmp_path, key, value, fragment):
    env = {"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": "s" * 60, key: value}
    with pytest.raises(config.ConfigError, match=re.escape(fragment)):
        config.load(env)


def test_starter_file_parses_and_documents_every_section(tmp_path):
    (tmp_path / config.CONFIG_FILE).write_text(config.starter_toml(), encoding="utf-8")
    cfg = config.load({"FLEETROOM_DATA_DIR": str(tmp_path)})
    text = config.starter_toml()
    for section in ("database", "worker", "security", "fleet", "mail", "cache"):
        assert f"[{section}]" in text
    assert cfg.mail.host is None  # mail goes to files until a server is configured


@pytest.mark.django_db
def test_cache_is_shared_and_mail_defaults_to_files(settings):
    from django.core.cache import cache

    assert settings.CACHES["default"]["BACKEND"].endswith("DatabaseCache")
    cache.set("fleetroom-test-key", 42, 30)  # the table exists (created on migrate)
    assert cache.get("fleetroom-test-key") == 42


def _settings_in_subprocess(tmp_path, **env_extra: str) -> dict:
    """The settings module as a fresh process derives it (the test runner replaces the
    mail backend in this one)."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json, fleetroom.settings as s; print(json.dumps({k: str(getattr(s, k, ''))"
            " for k in ('EMAIL_BACKEND', 'EMAIL_FILE_PATH', 'EMAIL_HOST', 'EMAIL_PORT',"
            " 'EMAIL_USE_SSL', 'EMAIL_USE_TLS', 'FLEETROOM_FLEET_RAW_RETENTION_DAYS',"
            " 'FLEETROOM_API_TOKEN_MAX_DAYS')}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}
    env.update({"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": "s" * 60,
                **env_extra})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_mail_goes_to_files_in_the_data_dir_until_a_host_is_set(tmp_path):
    s = _settings_in_subprocess(tmp_path)
    assert s["EMAIL_BACKEND"] == "django.core.mail.backends.filebased.EmailBackend"
    assert s["EMAIL_FILE_PATH"] == str(tmp_path / "mail")
    s = _settings_in_subprocess(tmp_path, FLEETROOM_MAIL_HOST="127.0.0.1",
                                FLEETROOM_MAIL_PORT="2525", FLEETROOM_MAIL_SECURITY="tls",
                                FLEETROOM_FLEET_RAW_RETENTION_DAYS="7")
    assert s["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (s["EMAIL_HOST"], s["EMAIL_PORT"]) == ("127.0.0.1", "2525")
    assert (s["EMAIL_USE_SSL"], s["EMAIL_USE_TLS"]) == ("True", "False")
    assert s["FLEETROOM_FLEET_RAW_RETENTION_DAYS"] == "7"


def test_api_section_is_strict(tmp_path):
    base = {"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": "s" * 60}
    cfg = config.load({**base, "FLEETROOM_API_RATE": "100/h"})
    assert cfg.api.rate == "100/h"
    assert cfg.api.token_max_days == 365
    with pytest.raises(config.ConfigError, match=re.escape("api.rate")):
        config.load({**base, "FLEETROOM_API_RATE": "lots"})
    s = _settings_in_subprocess(tmp_path, FLEETROOM_API_TOKEN_MAX_DAYS="30")
    assert s["FLEETROOM_API_TOKEN_MAX_DAYS"] == "30"

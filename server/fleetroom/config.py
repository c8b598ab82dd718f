"""Server configuration: environment variables over one optional TOML file, strictly.

Every setting has one name in the TOML file (``[section] key``) and one in the
environment (``FLEETROOM_SECTION_KEY``, or ``FLEETROOM_KEY`` for the top level).
Anything unknown or malformed stops start-up with a message that names the
setting and where it came from — a typo must never silently fall back to a
default (healthchecks' ``envbool`` refuses anything but true/false; so do we).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_FILE = "fleetroom.toml"
NOT_SERVER_PREFIXES = ("FLEETROOM_SNMP_", "FLEETROOM_AGENT_", "FLEETROOM_DEMO_",
                       "FLEETROOM_SHARED", "FLEETROOM_BENCH_")
"""Variables of the agent, the demo and the tests, which share the prefix."""


class ConfigError(Exception):
    """The configuration is wrong; the message says what, where, and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    """SQLite in the data directory by default; PostgreSQL by giving a URL."""

    url: str | None = None
    """``postgresql://user:pass@host:port/name``; empty means SQLite in the data dir."""
    conn_max_age: int = Field(60, ge=0)

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, v: str | None) -> str | None:
        if v and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("only postgresql:// URLs are supported (SQLite is the default)")
        return v or None


class WorkerConfig(_Section):
    """Background jobs (Huey): SQLite file by default, PostgreSQL or Redis to scale out."""

    backend: Literal["sqlite", "postgres", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    workers: int = Field(2, ge=1, le=64)
    immediate: bool = False
    """Run tasks inline (tests only)."""


class SecurityConfig(_Section):
    """HTTPS and session policy."""

    https: bool = False
    """Behind TLS: secure cookies, HSTS, redirect to https."""
    hsts_seconds: int = Field(31536000, ge=0)
    trusted_proxies: bool = False
    """Trust X-Forwarded-Proto/-For from a reverse proxy (only when one is in front)."""
    csrf_trusted_origins: list[str] = Field(default_factory=list)
    session_idle_minutes: int = Field(30, ge=1)
    session_absolute_hours: int = Field(12, ge=1)
    lockout_failures: int = Field(5, ge=1)
    lockout_cooloff_minutes: int = Field(15, ge=1)
    deactivate_after_days: int = Field(90, ge=1)
    mfa_required_for_all: bool = False
    """Every user must set up a second factor (operator and dealer roles always must)."""


class FleetConfig(_Section):
    """Reading history and device state."""

    raw_retention_days: int = Field(90, ge=1, le=3650)
    """Raw readings are kept this long; daily counter rollups stay for good."""
    not_reporting_hours: int = Field(24, ge=1, le=24 * 120)
    """A device without a reading for this long is shown as "not reporting"."""
    max_future_skew_seconds: int = Field(3600, ge=0, le=7 * 86400)
    """Readings dated further ahead than this (agent clock drift) are refused."""


class MailConfig(_Section):
    """Outgoing mail (password resets, security notices, later alerts).

    Without a host, mail is written as files into ``<data_dir>/mail`` — nothing is
    lost and nothing leaves the machine until an operator configures a server.
    """

    host: str | None = None
    port: int = Field(587, ge=1, le=65535)
    user: str | None = None
    password: str | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    from_address: str = "Fleetroom <fleetroom@localhost>"
    timeout_seconds: int = Field(20, ge=1, le=300)


class CacheConfig(_Section):
    """The cache every web and worker process shares (rate limits, throttles, sessions'
    helpers).  A per-process memory cache would let each gunicorn worker count login
    attempts on its own, so the default is a table in the database."""

    backend: Literal["database", "redis"] = "database"
    redis_url: str = "redis://127.0.0.1:6379/1"


class Config(_Section):
    """Everything the server reads at start-up."""

    data_dir: Path
    secret_key: str = Field(min_length=50)
    debug: bool = False
    bind: str = "127.0.0.1:8000"
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"])
    base_url: str = "http://127.0.0.1:8000"
    language: Literal["de", "en"] = "en"
    time_zone: str = "Europe/Berlin"
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    mail: MailConfig = Field(default_factory=MailConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)


_BOOL = {"true": True, "false": False}


def _env_value(raw: str, annotation: Any) -> Any:
    """Parse an environment string for a field: strict booleans, ints, comma lists."""
    text = str(annotation)
    if annotation is bool or text == "bool":
        if raw.lower() not in _BOOL:
            raise ValueError(f"must be true or false, not {raw!r}")
        return _BOOL[raw.lower()]
    if "list[" in text:
        return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Every field whose type is a section is a [section]; a new section needs no edit here.
    sections: dict[str, type[BaseModel]] = {
        name: field.annotation for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Section)}
    known: dict[str, tuple[str | None, str, Any]] = {}
    for name, field in Config.model_fields.items():
        if name not in sections:
            known[f"FLEETROOM_{name.upper()}"] = (None, name, field.annotation)
    for section_name, model in sections.items():
        for name, field in model.model_fields.items():
            known[f"FLEETROOM_{section_name.upper()}_{name.upper()}"] = (
                section_name, name, field.annotation)
    for key, raw in env.items():
        if not key.startswith("FLEETROOM_") or key.startswith(NOT_SERVER_PREFIXES):
            continue
        if key not in known:
            raise ConfigError(f"unknown environment variable {key} (see the README for the "
                              "list of settings)")
        section, name, annotation = known[key]
        try:
            value = _env_value(raw, annotation)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
        if section is None:
            out[name] = value
        else:
            out.setdefault(section, {})[name] = value
    return out


def data_dir_from(env: Mapping[str, str]) -> Path:
    """``FLEETROOM_DATA_DIR`` or ``./data``, absolute."""
    return Path(env.get("FLEETROOM_DATA_DIR", "data")).resolve()


def load(env: Mapping[str, str] | None = None) -> Config:
    """The configuration from the data directory's TOML file and the environment."""
    env = os.environ if env is None else env
    data_dir = data_dir_from(env)
    path = data_dir / CONFIG_FILE
    file_data: dict[str, Any] = {}
    if path.exists():
        try:
            file_data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    env_data = _from_env(env)
    merged: dict[str, Any] = {**file_data, "data_dir": data_dir}
    for key, value in env_data.items():
        if isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    if "secret_key" not in merged:
        raise ConfigError(f"no secret key: run `fleetroom init` to create {path}, or set "
                          "FLEETROOM_SECRET_KEY")
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration ({path} and FLEETROOM_* variables): "
                          f"{problems}") from exc


def starter_toml() -> str:
    """A commented starter file with a fresh secret (written by ``fleetroom init``)."""
    return f'''# Fleetroom server configuration. Environment variables override these
# (FLEETROOM_<KEY>, FLEETROOM_<SECTION>_<KEY>). Unknown keys are an error.
secret_key = "{secrets.token_urlsafe(64)}"
# bind = "127.0.0.1:8000"
# base_url = "https://fleet.example.com"
# allowed_hosts = ["fleet.example.com"]
# language = "de"

[database]
# url = "postgresql://fleetroom@127.0.0.1:5432/fleetroom"   # default: SQLite in this directory

[worker]
# backend = "sqlite"     # sqlite | postgres | redis
# workers = 2

[security]
# https = true           # behind TLS: secure cookies, HSTS, redirect
# trusted_proxies = false
# session_idle_minutes = 30
# session_absolute_hours = 12
# deactivate_after_days = 90
# mfa_required_for_all = false   # operator and dealer roles always need a second factor

[fleet]
# raw_retention_days = 90
# not_reporting_hours = 24

[mail]
# host = "smtp.example.com"      # without a host, mail is written to files in <data_dir>/mail
# port = 587
# security = "starttls"          # starttls | tls | none
# user = "fleetroom"
# password = "…"                 # or FLEETROOM_MAIL_PASSWORD
# from_address = "Fleetroom <fleetroom@example.com>"

[cache]
# backend = "database"           # database | redis (shared by every process)
# redis_url = "redis://127.0.0.1:6379/1"
'''

"""``agent.toml``: the agent's local configuration, parsed strictly.

Everything the *customer* decides lives here and nowhere else: which networks are
scanned, which credentials are used, the allowlist the server can never widen,
which commands the server may send at all, how much disk the outbox may use,
the order of transports and the local status page.  The server steers only the
schedule (within the protocol's limits) and may ask for work *inside* this policy.

Strict on purpose (ARCHITECTURE.md rule 7): an unknown key is an error naming
the key — a typo such as ``[scan] target = …`` must not silently scan nothing —
and a wrong type is an error too (``port = "8765"`` is not quietly converted).
Messages never contain a secret.

Example (``docs/agent-service.md`` has the full annotated file)::

    data_dir = "/var/lib/fleetroom-agent"

    [scan]
    targets = ["10.1.0.0/24", "10.1.5.20-40"]

    [policy]
    allowlist = ["10.1.0.0/16"]

    [[credentials]]
    name = "customer-v3"
    version = "3"
    user = "fleetroom"
    auth_proto = "SHA256"
    auth_key = { env = "FLEETROOM_V3_AUTH_KEY" }
    priv_proto = "AES256"
    priv_key = { file = "/etc/fleetroom-agent/v3-priv.key" }
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from fleetroom_protocol.messages import CommandKind
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..cli_options import timing
from ..collect.credentials import CredentialConfigError, CredentialSet, make_credential
from ..discovery.targets import ALLOW_CATEGORIES, TargetSpecError, parse_spec, plan
from ..snmp.types import Timing
from ..transports.smtp import SmtpSettings
from .allowlist import Allowlist, AllowlistError
from .secrets import SecretError, resolve_secret, world_readable

DATA_DIR_ENV: Final = "FLEETROOM_AGENT_DATA_DIR"
TransportName = Literal["https", "mqtt", "email"]
TRANSPORT_NAMES: Final[tuple[TransportName, ...]] = ("https", "mqtt", "email")
COMMAND_KINDS: Final[tuple[str, ...]] = get_args(CommandKind)
LOCALHOST: Final = "127.0.0.1"
SECRET_FIELDS: Final = ("community", "auth_key", "priv_key")
REDACTED: Final = "<redacted>"


class ConfigError(ValueError):
    """The config cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ScanConfig(_Strict):
    """What the agent looks for, and how hard it tries."""

    targets: list[str] = Field(default_factory=list)
    """CIDRs, ranges, addresses (``host:port``) and hostnames, as ``fleetroom-agent scan``."""
    exclude: list[str] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list)
    """Refused address categories to allow anyway (``link-local`` …), as ``scan --allow``."""
    max_addresses: int = Field(default=65536, ge=1, le=1 << 20)
    timeout_s: float = Field(default=1.5, ge=0.05, le=60)
    retries: int = Field(default=1, ge=0, le=10)
    concurrency: int | None = Field(default=None, ge=1, le=4096)
    """Devices read at once (default: 16 per CPU core, as ``scan``)."""

    @field_validator("allow")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - ALLOW_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {', '.join(unknown)} "
                             f"(one of {', '.join(sorted(ALLOW_CATEGORIES))})")
        return value


class PolicyConfig(_Strict):
    """Local limits on what the server may ask for."""

    allowlist: list[str] | None = None
    """Addresses, ranges and networks that may ever be polled; default: scan.targets."""
    commands: list[str] = Field(default_factory=lambda: list(COMMAND_KINDS))
    """Command kinds the server may send; others are answered ``refused``."""

    @field_validator("commands")
    @classmethod
    def _known_commands(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(COMMAND_KINDS))
        if unknown:
            raise ValueError(f"unknown command kinds {', '.join(unknown)} "
                             f"(one of {', '.join(COMMAND_KINDS)})")
        return value


class CredentialEntry(_Strict):
    """One ``[[credentials]]`` table; secrets may be ``{ env = … }`` or ``{ file = … }``."""

    name: str = Field(min_length=1, max_length=64)
    version: str = "2c"
    community: str | dict[str, str] | None = None
    user: str | None = None
    auth_proto: str | None = None
    auth_key: str | dict[str, str] | None = None
    priv_proto: str | None = None
    priv_key: str | dict[str, str] | None = None
    context: str = ""
    networks: list[str] = Field(default_factory=list)


class OutboxConfig(_Strict):
    """The local store-and-forward queue."""

    budget_mb: float = Field(default=256.0, gt=0, le=1024 * 1024)
    """Payload bytes the outbox may hold before it coalesces and, last, drops (with a
    gap record) — a disk that fills up must not stop the agent."""


class EmailConfig(_Strict):
    """The customer's mail server for the e-mail transport (``[transports.email]``)."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | dict[str, str] | None = None
    mail_from: str
    mail_to: str | None = None
    """Overrides the intake address the server gave at enrollment."""
    ca_file: str | None = None
    max_mail_bytes: int | None = None
    timeout_s: float | None = None
    helo_name: str | None = None


class MqttConfig(_Strict):
    """MQTT options the enrollment does not fix (``[transports.mqtt]``)."""

    protocol: Literal["5", "3.1.1"] = "5"


class TransportsConfig(_Strict):
    """How envelopes leave the site (HTTPS proxy, CA and pins are set at enrollment)."""

    order: list[TransportName] = Field(
        default_factory=lambda: list(TRANSPORT_NAMES), min_length=1)
    """Failover order; transports the enrollment or this file did not configure are
    skipped (MQTT needs broker credentials from the server, e-mail needs
    ``[transports.email]``)."""
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    email: EmailConfig | None = None
    batch_items: int = Field(default=500, ge=1, le=5000)
    """Items per envelope (the protocol allows 5,000)."""
    batch_kb: int = Field(default=1000, ge=16, le=16 * 1024)
    """Payload kilobytes per envelope (a single larger item still goes alone)."""
    backoff_cap_s: float = Field(default=300.0, ge=1, le=3600)
    """Longest pause between attempts while the server is unreachable (full jitter
    below it; a server's Retry-After always wins)."""

    @field_validator("order")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each transport may be listed once")
        return value


class StatusPageConfig(_Strict):
    """The local status page (password: ``fleetroom-agent set-password``)."""

    enabled: bool = True
    bind: str = LOCALHOST
    port: int = Field(default=8765, ge=0, le=65535)

    @field_validator("bind")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        return check_status_page_bind(value)


def check_status_page_bind(host: str) -> str:
    """``host`` if it is exactly :data:`LOCALHOST`, else :class:`ValueError`.

    The one check for the config and for :class:`..localui.server.StatusPage`.
    Deliberately not "any loopback address" (``transports.https.is_loopback``):
    ``localhost`` may resolve elsewhere, and the page's ``Host`` header check
    against DNS rebinding accepts only ``127.0.0.1`` and ``localhost``.
    """
    if host != LOCALHOST:
        raise ValueError(f"the status page binds to {LOCALHOST} only, not {host!r}; the agent "
                         "never listens on the network (use an SSH tunnel to see it remotely)")
    return host


class LocalSchedule(_Strict):
    """Local adjustments of the server-steered schedule."""

    max_status_poll_s: int | None = Field(default=None, ge=10, le=86400)
    """Poll status at least this often, whatever the server says (a site that needs
    alerts faster than the server's fleet-wide default)."""
    profile_check: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    """Local time of the daily profile check, overriding the server's."""


class ProfilesConfig(_Strict):
    """Extra profile directories (override shipped profiles by name)."""

    dirs: list[str] = Field(default_factory=list)


class AgentConfigFile(_Strict):
    """The whole file, as written."""

    data_dir: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    scan: ScanConfig = Field(default_factory=ScanConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    credentials: list[CredentialEntry] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    transports: TransportsConfig = Field(default_factory=TransportsConfig)
    status_page: StatusPageConfig = Field(default_factory=StatusPageConfig)
    schedule: LocalSchedule = Field(default_factory=LocalSchedule)
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig)


@dataclass(frozen=True)
class AgentConfig:
    """The validated config with secrets resolved and the allowlist built."""

    path: Path | None
    file: AgentConfigFile
    credentials: tuple[CredentialSet, ...]
    allowlist: Allowlist
    data_dir: Path | None
    """From the file (relative to it); the command line and environment win over it."""
    smtp: SmtpSettings | None = None
    """``[transports.email]`` with its password resolved."""

    @property
    def timing(self) -> Timing:
        """Per-request timing for reads, as ``scan`` computes it."""
        return timing(self.file.scan.timeout_s, self.file.scan.retries)

    @property
    def budget_bytes(self) -> int:
        """The outbox disk budget in bytes."""
        return int(self.file.outbox.budget_mb * 1024 * 1024)

    def profile_dirs(self) -> list[Path]:
        """Extra profile directories, relative ones anchored at the config file."""
        base = self.path.parent if self.path else Path.cwd()
        return [base / Path(d).expanduser() for d in self.file.profiles.dirs]

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with every literal secret replaced (for the
        diagnostics bundle); ``{ env = … }`` / ``{ file = … }`` references are kept,
        they name where a secret is, not what it is."""
        data = self.file.model_dump(mode="json")
        for entry in data.get("credentials", []):
            for key in SECRET_FIELDS:
                if isinstance(entry.get(key), str):
                    entry[key] = REDACTED
        email = data.get("transports", {}).get("email")
        if isinstance(email, dict) and isinstance(email.get("password"), str):
            email["password"] = REDACTED
        return data


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _format_errors(path: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key {_where(loc)!r}")
        else:
            lines.append(f"{path}: {_where(loc)}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path) -> AgentConfig:
    """Read and validate ``path``; :class:`ConfigError` lists every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path | None = None) -> AgentConfig:
    """Validate config text (``path`` anchors relative paths and names the file)."""
    name = str(path) if path else "agent.toml"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    try:
        cfg = AgentConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(name, exc)) from None
    base = path.parent if path else Path.cwd()
    literal = [f"credentials[{i}].{k}" for i, c in enumerate(cfg.credentials, 1)
               for k in SECRET_FIELDS if isinstance(getattr(c, k), str)
               and not (k == "community" and getattr(c, k) == "public")]
    if cfg.transports.email is not None and isinstance(cfg.transports.email.password, str):
        literal.append("transports.email.password")
    if literal and path is not None and world_readable(path):
        raise ConfigError(
            f"{name}: holds secrets ({', '.join(literal)}) but every user can read it; "
            f"run chmod o-r {path}, or use {{ env = \"NAME\" }} / {{ file = \"PATH\" }}")
    credentials = _credential_sets(cfg, name, base)
    _check_targets(cfg, name)
    allowlist = _allowlist(cfg, name)
    data_dir = (base / Path(cfg.data_dir).expanduser()) if cfg.data_dir else None
    return AgentConfig(path=path, file=cfg, credentials=tuple(credentials),
                       allowlist=allowlist, data_dir=data_dir,
                       smtp=_smtp(cfg.transports.email, name, base))


def _smtp(email: EmailConfig | None, name: str, base: Path) -> SmtpSettings | None:
    if email is None:
        return None
    fields = email.model_dump(exclude_none=True)
    try:
        if email.password is not None:
            fields["password"] = resolve_secret(email.password, f"{name}: transports.email."
                                                "password", base)
        if email.ca_file is not None:
            fields["ca_file"] = base / Path(email.ca_file).expanduser()
        return SmtpSettings.model_validate(fields)
    except SecretError as exc:
        raise ConfigError(str(exc)) from None
    except ValidationError as exc:
        raise ConfigError(_format_errors(f"{name}: transports.email", exc)) from None


def _credential_sets(cfg: AgentConfigFile, name: str, base: Path) -> list[CredentialSet]:
    if not cfg.credentials:
        raise ConfigError(f"{name}: no [[credentials]] table; the agent needs at least one "
                          "(e.g. name = \"public\", version = \"2c\", community = \"public\")")
    names = [c.name for c in cfg.credentials]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{name}: credential names must be unique: {', '.join(dupes)}")
    sets = []
    for i, c in enumerate(cfg.credentials, 1):
        where = f"{name}: credentials[{i}] ({c.name})"
        try:
            secrets = {k: resolve_secret(getattr(c, k), f"{where}.{k}", base)
                       if getattr(c, k) is not None else None for k in SECRET_FIELDS}
            cred = make_credential(name=c.name, version=c.version, user=c.user,
                                   auth_proto=c.auth_proto, priv_proto=c.priv_proto,
                                   context=c.context, **secrets)
            nets = tuple(ipaddress.ip_network(n, strict=False) for n in c.networks)
        except SecretError as exc:
            raise ConfigError(str(exc)) from None
        except CredentialConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}.networks: {exc}") from None
        sets.append(CredentialSet(cred, nets))
    return sets


def _check_targets(cfg: AgentConfigFile, name: str) -> None:
    for i, t in enumerate([*cfg.scan.targets, *cfg.scan.exclude], 1):
        try:
            parse_spec(t)
        except TargetSpecError as exc:
            raise ConfigError(f"{name}: scan target {i} {t!r}: {exc}") from None
    if cfg.scan.targets:
        try:
            plan(cfg.scan.targets, cfg.scan.exclude, max_addresses=cfg.scan.max_addresses,
                 allow=frozenset(cfg.scan.allow))
        except TargetSpecError as exc:
            raise ConfigError(f"{name}: scan.targets: {exc}") from None


def _allowlist(cfg: AgentConfigFile, name: str) -> Allowlist:
    try:
        if cfg.policy.allowlist is None:
            return Allowlist.build(cfg.scan.targets, cfg.scan.exclude, hostnames_allowed=True,
                                   source="scan.targets")
        allow = Allowlist.build(cfg.policy.allowlist, cfg.scan.exclude)
    except AllowlistError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    for t in cfg.scan.targets:
        why = allow.check_spec(t)
        if why is not None:
            raise ConfigError(f"{name}: scan.targets: {why}")
    return allow


def resolve_data_dir(cli_value: Path | None, config: AgentConfig | None) -> Path:
    """The data directory: ``--data-dir`` / ``$FLEETROOM_AGENT_DATA_DIR`` (typer reads
    the variable into the option), else the config's ``data_dir``.  No silent default:
    the identity, the outbox and the state live there, and a second, empty directory
    chosen by accident would look like a fresh, unenrolled agent."""
    if cli_value is not None:
        return cli_value.expanduser().resolve()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if config is not None and config.data_dir is not None:
        return config.data_dir.resolve()
    raise ConfigError(f"no data directory: give --data-dir, set {DATA_DIR_ENV}, or set "
                      "data_dir in the config file")

"""``fleetroom-agent run``, ``status`` and ``set-password``: the long-running agent's commands.

Registered on the main ``fleetroom-agent`` app by :func:`register`; imports of the
runtime happen inside the commands so ``scan`` and ``probe`` start as fast as before.
Exit codes: 0 fine, 2 unusable config / not enrolled / bad input, 3 another agent
already runs on the data directory.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from .runtime.config import AgentConfig

err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-C", envvar="FLEETROOM_AGENT_CONFIG", dir_okay=False,
    help="The agent's TOML config file (see docs/agent-service.md).")]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="FLEETROOM_AGENT_DATA_DIR", file_okay=False,
    help="The agent's data directory (default: data_dir in the config).")]


def _config_or_exit(path: Path | None, *, required: bool) -> AgentConfig | None:
    from .runtime.config import ConfigError, load_config

    if path is None:
        if required:
            err.print("[red]error:[/] give --config FILE (or set FLEETROOM_AGENT_CONFIG)")
            raise typer.Exit(2)
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        # markup=False: a config line may contain brackets ([scan] …).
        err.print("error: " + str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from exc


def _data_dir_or_exit(cli_value: Path | None, config: AgentConfig | None) -> Path:
    from .runtime.config import ConfigError, resolve_data_dir

    try:
        return resolve_data_dir(cli_value, config)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def run(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    log_level: Annotated[str | None, typer.Option(
        help="debug, info, warning or error (default: log_level in the config).")] = None,
) -> None:
    """Run the agent: scan, poll, read on schedule, deliver, take commands (until stopped)."""
    from .runtime.app import run_agent, setup_logging

    cfg = _config_or_exit(config, required=True)
    assert cfg is not None
    directory = _data_dir_or_exit(data_dir, cfg)
    setup_logging(log_level or cfg.file.log_level)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        err.print(f"[red]error:[/] cannot use the data directory {directory}: {exc}")
        raise typer.Exit(2) from exc
    code = asyncio.run(run_agent(cfg, directory))
    raise typer.Exit(code)


def _human(doc: dict[str, Any]) -> None:
    out = Console()
    state = "[green]running[/]" if doc["running"] else "[red]not running[/]"
    out.print(f"agent {doc['agent_id'] or '(not enrolled)'}: {state}"
              + (f" (pid {doc['pid']})" if doc["pid"] else ""))
    out.print(f"queue: {doc['queue_items']} item(s), {doc['queue_bytes']} bytes; "
              f"oldest unsent: {doc['oldest_unsent_at'] or '-'}")
    if doc.get("outbox_error"):
        out.print(f"outbox: {doc['outbox_error']}", markup=False, highlight=False)
    out.print(f"last acknowledgement: {doc['last_ack_at'] or '-'}")
    out.print(f"last error: {doc['last_error'] or '-'}", markup=False)
    sched = doc.get("schedule") or {}
    if sched:
        out.print(f"schedule v{sched.get('version')}: status every "
                  f"{sched.get('effective_status_poll_s')} s, meter read every "
                  f"{sched.get('meter_read_s')} s")
    for t in doc.get("transports") or []:
        out.print(f"transport {t.get('name')}: {t.get('state')}"
                  + (f" ({t.get('last_error')})" if t.get("last_error") else ""), markup=False)
    out.print(f"devices: {doc['devices']}; weak SNMP crypto: "
              f"{', '.join(doc['weak_crypto_devices']) or 'none'}")


def status(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Queue depth, oldest unsent item, last acknowledgement, last error (also while
    the agent runs in another process)."""
    # Read-only: never opens an Outbox, so it cannot migrate, quarantine or lock the
    # running agent's store, nor create its reserve file.
    from .runtime.status_read import read_status

    cfg = _config_or_exit(config, required=False)
    directory = _data_dir_or_exit(data_dir, cfg)
    if not directory.is_dir():
        err.print(f"[red]error:[/] {directory} does not exist")
        raise typer.Exit(2)
    doc = read_status(directory)
    if json_out:
        print(json.dumps(doc, indent=1, default=str))
    else:
        _human(doc)


def set_password(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from standard input (scripts).")] = False,
) -> None:
    """Set the local status page's password (only its scrypt hash is stored)."""
    from .localui.password import PasswordError
    from .localui.password import set_password as store

    cfg = _config_or_exit(config, required=False)
    directory = _data_dir_or_exit(data_dir, cfg)
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New status page password", hide_input=True,
                                confirmation_prompt=True)
    try:
        path = store(directory, password)
    except PasswordError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    err.print(f"status page password set ({path})")


def register(app: typer.Typer) -> None:
    """Add ``run``, ``status`` and ``set-password`` to the ``fleetroom-agent`` app."""
    app.command("run")(run)
    app.command("status")(status)
    app.command("set-password")(set_password)

"""``fleetroom``: init, serve, worker, manage, status — one command, one data directory.

``serve`` is the embedded default: it migrates, then supervises the web server
(gunicorn) and one Huey consumer as child processes, restarting either if it dies,
and stops both on Ctrl-C or SIGTERM.  Scale-out runs the same pieces separately
(``gunicorn fleetroom.wsgi`` × M, ``fleetroom worker`` × N) with settings changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from fleetroom import config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Fleetroom server: printer fleets and mailrooms.")

RESTART_BACKOFF_MAX = 30.0


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _load_config() -> config.Config:
    try:
        return config.load()
    except config.ConfigError as exc:
        raise _fail(str(exc)) from exc


def _django() -> None:
    """Configure Django from the validated config (exits cleanly on a config error)."""
    _load_config()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetroom.settings")
    import django

    django.setup()


@app.command()
def init(force: Annotated[bool, typer.Option(help="Overwrite an existing config.")] = False,
         ) -> None:
    """Create the data directory and a starter config with fresh secrets."""
    data_dir = config.data_dir_from(os.environ)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    path = data_dir / config.CONFIG_FILE
    if path.exists() and not force:
        typer.echo(f"{path} exists; keeping it (use --force to replace)")
        return
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(config.starter_toml())
    os.replace(tmp, path)
    typer.echo(f"wrote {path}")


def _migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    # Hashed, pre-compressed static files in the data directory, served by WhiteNoise.
    call_command("collectstatic", interactive=False, verbosity=0)


@app.command()
def serve(bind: Annotated[str | None, typer.Option(
        help="HOST:PORT to listen on (default from config, FLEETROOM_BIND).")] = None,
        web_workers: Annotated[int, typer.Option(min=1, max=64)] = 2) -> None:
    """Migrate, then run the web server and one background worker until stopped."""
    cfg = _load_config()
    _django()
    _migrate()
    address = bind or cfg.bind
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "fleetroom.settings"}
    exe = Path(sys.executable).parent
    tls = ([] if cfg.tls_cert is None else
           ["--certfile", str(cfg.tls_cert), "--keyfile", str(cfg.tls_key)])
    gunicorn = [str(exe / "gunicorn"), "fleetroom.wsgi:application",
                "--config", "python:fleetroom.gunicorn_conf", "--threads", "4",
                "--access-logfile", "-", "--graceful-timeout", "10"]
    commands = {
        "web": [*gunicorn, "--bind", address, "--workers", str(web_workers),
                *(tls if cfg.web_tls else [])],
        "worker": [str(exe / "fleetroom"), "worker"],
    }
    if cfg.agents_bind:
        commands["agents"] = [*gunicorn, "--bind", cfg.agents_bind, "--workers", "2", *tls]
    if cfg.mail_intake.enabled:
        commands["mail-intake"] = [str(exe / "fleetroom"), "mail-intake"]
    if cfg.mqtt.enabled:
        commands["mqtt-bridge"] = [str(exe / "fleetroom"), "mqtt-bridge"]
    scheme = "https" if tls and cfg.web_tls else "http"
    typer.echo(f"Fleetroom on {scheme}://{address}/ (data in {cfg.data_dir})")
    if cfg.agents_bind:
        typer.echo(f"Agents connect to https://{cfg.agents_bind}/")
    _supervise(commands, env)


@app.command("mail-intake")
def mail_intake(once: Annotated[bool, typer.Option(
        help="Poll the IMAP mailbox once and exit (for cron).")] = False) -> None:
    """Receive agents' envelopes by e-mail: SMTP receiver and/or IMAP polling."""
    from fleetroom.agents.mail_intake import main as intake_main

    raise typer.Exit(intake_main(_load_config, _django, once=once))


@app.command("mqtt-bridge")
def mqtt_bridge(setup: Annotated[bool, typer.Option(
        help="Create the bridge's broker role and account first if missing.")] = True,
        reset_password: Annotated[bool, typer.Option(
            help="Set the bridge account's password to [mqtt] bridge_password.")] = False,
        ) -> None:
    """Carry agents' envelopes between the MQTT broker and the server (docs/mqtt.md)."""
    from fleetroom.agents.mqtt_bridge import main as bridge_main

    raise typer.Exit(bridge_main(_load_config, _django, setup=setup,
                                 reset_password=reset_password))


@app.command("tls-selfsigned")
def tls_selfsigned(hosts: Annotated[list[str], typer.Argument(
        help="Names and addresses the server is reached by.")]) -> None:
    """Make a private CA and a server certificate in <data_dir>/tls (for agents' --ca-file)."""
    from fleetroom.tls import make_self_signed

    files = make_self_signed(config.data_dir_from(os.environ) / "tls", hosts)
    typer.echo(f"CA certificate (give it to agents: --ca-file): {files.ca_cert}")
    typer.echo(f'Add to the config:\ntls_cert = "{files.cert}"\ntls_key = "{files.key}"')


def _supervise(commands: dict[str, list[str]], env: dict[str, str]) -> None:
    """Run every command; restart one that exits, with back-off; stop all on a signal."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    backoff = dict.fromkeys(commands, 1.0)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, env=env)  # noqa: S603
        while not stopping:
            time.sleep(0.5)
            for name, proc in procs.items():
                code = proc.poll()
                if code is None or stopping:
                    continue
                typer.echo(f"{name} exited with {code}; restarting in {backoff[name]:.0f} s",
                           err=True)
                time.sleep(backoff[name])
                backoff[name] = min(backoff[name] * 2, RESTART_BACKOFF_MAX)
                procs[name] = subprocess.Popen(commands[name], env=env)  # noqa: S603
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


@app.command()
def worker() -> None:
    """Run a Huey consumer (background and periodic jobs)."""
    _django()
    from django.core.management import call_command

    call_command("run_huey")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def manage(ctx: typer.Context) -> None:
    """Pass the rest to Django's management commands (e.g. createsuperuser --noinput)."""
    _django()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["fleetroom manage", *ctx.args])


@app.command()
def status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts of tenants, users, agents, devices and readings; time of the last reading."""
    _django()
    from fleetroom.core.status import collect_status

    data = collect_status()
    if json_out:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        for key, value in data.items():
            typer.echo(f"{key}: {value}")


audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(tenant: Annotated[int | None, typer.Option(
        help="Check only this tenant's chain (by id).")] = None) -> None:
    """Recompute the audit chains; print every problem and exit 1 if there is any."""
    _django()
    from fleetroom.core import audit

    problems = audit.verify_chain(chain=audit.chain_key(tenant) if tenant else None)
    for problem in problems:
        typer.echo(str(problem))
    chains, events = audit.chain_stats()
    if problems:
        typer.echo(f"audit log: {len(problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit log ok: {chains} chain(s), {events} event(s)")


@app.command("import-readings")
def import_readings(
        file: Annotated[str, typer.Argument(help="`fleetroom-agent scan --json` output, or -")],
        tenant: Annotated[str, typer.Option(help="Site or customer: id, /1/5/9/ or A/B/C names.")],
        batch_size: Annotated[int, typer.Option(min=1)] = 500,
        json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Import readings, one per line; bad lines are reported by number and skipped."""
    _django()
    from django.core.management import call_command
    from django.core.management.base import CommandError

    try:
        call_command("import_readings", file, tenant=tenant, batch_size=batch_size,
                     json_out=json_out)
    except CommandError as exc:
        raise _fail(str(exc)) from exc


def main() -> None:
    """Console-script entry point."""
    app()

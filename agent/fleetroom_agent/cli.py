"""``fleetroom-agent``: scan networks, probe one device, record walks, check profiles.

Output contract (other tools rely on it): with ``--json``, ``scan`` prints one
normalised reading per printer per line and ``probe`` exactly one JSON document;
everything for humans (progress, skipped devices, errors) goes to stderr.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from fleetroom_profiles import ProfileError, ProfileSet
from fleetroom_protocol import Reading
from rich.console import Console

from . import render
from .cli_options import (
    AuthKeyOpt,
    AuthProtoOpt,
    CommunityOpt,
    ContextOpt,
    CredentialArgs,
    CredFileOpt,
    PrivKeyOpt,
    PrivProtoOpt,
    ProfilesOpt,
    RetriesOpt,
    TimeoutOpt,
    UserOpt,
    VersionOpt,
    credential_sets_or_exit,
    timing,
)

if TYPE_CHECKING:
    from .identity import AgentIdentity

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Fleetroom agent: find and read printers over SNMP.")
profiles_app = typer.Typer(no_args_is_help=True, help="Work with device profiles.")
app.add_typer(profiles_app, name="profiles")

err = Console(stderr=True, soft_wrap=True)


def _profiles(extra: list[Path] | None) -> ProfileSet:
    from .profile_update import load_profiles  # + the installed bundle ($FLEETROOM_AGENT_DATA_DIR)

    try:
        return load_profiles(None, extra or [])
    except ProfileError as exc:
        err.print("[red]profiles are broken; nothing was read:[/]")
        for p in exc.problems:
            err.print(f"  {p}")
        raise typer.Exit(2) from exc


@app.command()
def scan(
    targets: Annotated[list[str], typer.Argument(
        help="CIDR (10.0.0.0/24), range (10.0.0.1-50), address, [v6]:port or hostname.")],
    exclude: Annotated[list[str] | None, typer.Option("--exclude", "-x")] = None,
    max_addresses: Annotated[int, typer.Option(min=1)] = 65536,
    allow: Annotated[list[str] | None, typer.Option(
        help="Allow a refused range: link-local, multicast, broadcast, this-network.")] = None,
    community: CommunityOpt = None, snmp_version: VersionOpt = None, v3_user: UserOpt = None,
    auth_proto: AuthProtoOpt = None, auth_key: AuthKeyOpt = None,
    priv_proto: PrivProtoOpt = None, priv_key: PrivKeyOpt = None, context: ContextOpt = "",
    credentials: CredFileOpt = None,
    timeout: TimeoutOpt = 1.5, retries: RetriesOpt = 1,
    concurrency: Annotated[int | None, typer.Option(
        min=1, max=4096, help="Devices read at once (default: 16 per CPU core).")] = None,
    profiles: ProfilesOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One reading per line.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Also write one reading per line (JSON) to this file.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-V",
                                          help="Show skipped devices and why.")] = False,
) -> None:
    """Find every printer in TARGETS and read it."""
    from .scan import ScanOptions, run_scan

    creds = credential_sets_or_exit(CredentialArgs(
        community, snmp_version, v3_user, auth_proto, auth_key, priv_proto, priv_key, context,
        credentials))
    opts = ScanOptions(targets=targets, exclude=exclude or [], max_addresses=max_addresses,
                       allow=frozenset(allow or []), credentials=creds,
                       timing=timing(timeout, retries), concurrency=concurrency,
                       progress=sys.stderr.isatty() and not verbose)
    ps = _profiles(profiles)
    sink = out.open("w", encoding="utf-8") if out is not None else None

    def on_reading(r: Reading) -> None:
        line = r.to_json()
        if json_out:
            print(line, flush=True)
        if sink is not None:
            sink.write(line + "\n")

    try:
        outcome = asyncio.run(run_scan(opts, ps, on_reading=(
            on_reading if json_out or sink is not None else None)))
    finally:
        if sink is not None:
            sink.close()
    if outcome.error:
        err.print(f"[red]error:[/] {outcome.error}")
        raise typer.Exit(2)
    if not json_out:
        Console().print(render.scan_table(outcome.readings))
    if verbose:
        render.print_skipped(err, outcome.not_read)
    err.print(f"{outcome.addresses} address(es), {len(outcome.readings)} printer(s), "
              f"{outcome.skipped} other device(s), {outcome.silent} silent, "
              f"{outcome.seconds:.1f} s")


@app.command()
def probe(
    host: Annotated[str, typer.Argument(help="HOST[:PORT], [IPv6]:PORT or hostname.")],
    community: CommunityOpt = None, snmp_version: VersionOpt = None, v3_user: UserOpt = None,
    auth_proto: AuthProtoOpt = None, auth_key: AuthKeyOpt = None,
    priv_proto: PrivProtoOpt = None, priv_key: PrivKeyOpt = None, context: ContextOpt = "",
    credentials: CredFileOpt = None,
    timeout: TimeoutOpt = 2.0, retries: RetriesOpt = 1,
    profiles: ProfilesOpt = None,
    recording: Annotated[Path | None, typer.Option(
        help="Answer from a .snmprec recording instead of the network (profile writing).",
        exists=True, dir_okay=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Exactly one JSON document.")] = False,
) -> None:
    """Read one device in full, including which profile matched and why."""
    from .collect.reader import Failed, Skipped
    from .scan import probe_one

    creds = credential_sets_or_exit(CredentialArgs(
        community, snmp_version, v3_user, auth_proto, auth_key, priv_proto, priv_key, context,
        credentials))
    ps = _profiles(profiles)
    try:
        result = asyncio.run(probe_one(host, creds, ps, timing(timeout, retries), recording))
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if isinstance(result, Failed):
        err.print(f"[red]{result.target}: {result.reason}[/]")
        raise typer.Exit(1)
    if isinstance(result, Skipped):
        err.print(f"[yellow]{result.target}: {result.reason}[/]")
        raise typer.Exit(1)
    if json_out:
        print(result.to_json())
    else:
        render.print_probe(Console(), result)


@app.command()
def walk(
    host: Annotated[str, typer.Argument(help="HOST[:PORT] to record.")],
    out: Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Write here instead of stdout.")] = None,
    redact: Annotated[bool, typer.Option(
        help="Blank serials, names, locations and contacts.")] = False,
    root: Annotated[list[str] | None, typer.Option(
        help="Subtrees to record (default: system, interfaces, host resources, "
             "Printer-MIB and all vendor subtrees).")] = None,
    community: CommunityOpt = None, snmp_version: VersionOpt = None, v3_user: UserOpt = None,
    auth_proto: AuthProtoOpt = None, auth_key: AuthKeyOpt = None,
    priv_proto: PrivProtoOpt = None, priv_key: PrivKeyOpt = None, context: ContextOpt = "",
    credentials: CredFileOpt = None,
    timeout: TimeoutOpt = 2.0, retries: RetriesOpt = 1,
    max_rows: Annotated[int, typer.Option(min=1)] = 200000,
    profiles: ProfilesOpt = None,
) -> None:
    """Record a device in snmpsim's snmprec format so a new model can be profiled."""
    from .walker import record

    creds = credential_sets_or_exit(CredentialArgs(
        community, snmp_version, v3_user, auth_proto, auth_key, priv_proto, priv_key, context,
        credentials))
    ps = _profiles(profiles)
    t = timing(timeout, retries, deadline=600)
    try:
        result = asyncio.run(record(host, creds, ps, t, roots=root or [], redact=redact,
                                    max_rows=max_rows))
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if result.error:
        err.print(f"[red]{host}: {result.error}[/]")
        raise typer.Exit(1)
    text = "".join(line + "\n" for line in result.lines)
    if out is None:
        sys.stdout.write(text)
    else:
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text, encoding="latin-1")
        os.replace(tmp, out)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}")
    err.print(f"{len(result.lines)} OIDs recorded" + (f" to {out}" if out else ""))


@app.command()
def enroll(
    server: Annotated[str, typer.Option(help="Server URL, e.g. https://fleetroom.example.com")],
    token: Annotated[str | None, typer.Option(
        envvar="FLEETROOM_ENROLL_TOKEN",
        help="Enrollment token (shown once in the server UI; the environment variable "
             "keeps it out of the process list).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        envvar="FLEETROOM_AGENT_DATA_DIR",
        help="The agent's data directory (the same one 'run' uses).")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="PEM CA bundle to trust instead of the system's.")
    ] = None,
    pin: Annotated[list[str] | None, typer.Option(
        help="sha256:<base64> of the server's public key (SPKI); repeat for a backup key.")
    ] = None,
    proxy: Annotated[str | None, typer.Option(help="HTTP(S) proxy URL.")] = None,
    force: Annotated[bool, typer.Option(
        help="Replace an existing identity (the old one is kept as a backup).")] = False,
) -> None:
    """Create this agent's keys and register them with the server using a token."""
    from .enroll import enroll_cli

    raise typer.Exit(enroll_cli(server, token, data_dir, ca_file, pin, proxy, force))


@profiles_app.command("check")
def profiles_check(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
    with_shipped: Annotated[bool, typer.Option(
        help="Resolve 'extends' against the shipped profiles too.")] = True,
) -> None:
    """Validate every profile in DIRECTORY; problems name file, line and issue."""
    ps = ProfileSet.load([directory], include_shipped=with_shipped, strict=False)
    own = [p for p in ps.profiles.values() if Path(p.path).is_relative_to(directory)]
    for p in ps.problems:
        err.print(f"[red]{p}[/]")
    if ps.problems:
        err.print(f"{len(ps.problems)} problem(s)")
        raise typer.Exit(1)
    Console().print(f"{len(own)} profile(s) OK in {directory}")


@profiles_app.command("list")
def profiles_list(profiles: ProfilesOpt = None) -> None:
    """Show every profile, what it extends and how it matches."""
    from rich.table import Table

    ps = _profiles(profiles)
    t = Table()
    for col in ("Name", "Extends", "Kind", "Match"):
        t.add_column(col, overflow="fold")
    for name in sorted(ps.profiles):
        p = ps.profiles[name].profile
        match = "; ".join(" & ".join(x for x in (m.sysobjectid, m.sysdescr and f"/{m.sysdescr}/")
                                     if x) for m in p.match) or "(abstract)"
        t.add_row(name, ", ".join(p.extends), p.device_kind or "", match)
    Console().print(t)


DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="FLEETROOM_AGENT_DATA_DIR", file_okay=False,
    help="The agent's data directory.")]


def _update_failed(exc: Exception, data_dir: Path) -> typer.Exit:
    from .profile_update import installed_version

    err.print(f"[red]{exc}[/]")
    version = installed_version(data_dir)
    err.print("the profiles in use stay "
              + (f"bundle {version}" if version else "the shipped ones"))
    return typer.Exit(1)


def _identity_or_exit(data_dir: Path | None) -> tuple[Path, AgentIdentity]:
    from .identity import AgentIdentity, IdentityError

    if data_dir is None:
        err.print("[red]error:[/] give --data-dir or set FLEETROOM_AGENT_DATA_DIR")
        raise typer.Exit(2)
    try:
        return data_dir, AgentIdentity.load(data_dir)
    except IdentityError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


@profiles_app.command("import")
def profiles_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="A signed profile bundle file from the server.")],
    data_dir: DataDirOpt = None, profiles: ProfilesOpt = None,
) -> None:
    """Install a signed profile bundle by hand (checked exactly like a download)."""
    from .profile_update import ProfileUpdateError, import_bundle

    directory, identity = _identity_or_exit(data_dir)
    try:
        Console().print(import_bundle(file, directory, identity.server_verify_key,
                                      extra_dirs=profiles or []))
    except ProfileUpdateError as exc:
        raise _update_failed(exc, directory) from exc


@profiles_app.command("update")
def profiles_update(data_dir: DataDirOpt = None, profiles: ProfilesOpt = None) -> None:
    """Ask the server for a newer profile bundle now and install it."""
    from .profile_update import ProfileUpdateError, check_and_apply

    directory, identity = _identity_or_exit(data_dir)
    try:
        Console().print(asyncio.run(check_and_apply(identity, directory,
                                                    extra_dirs=profiles or [])))
    except ProfileUpdateError as exc:
        raise _update_failed(exc, directory) from exc


@profiles_app.command("status")
def profiles_status(
    data_dir: DataDirOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Which profile bundle is active, when it expires, and the last check's outcome."""
    import json

    from .profile_update import status

    if data_dir is None:
        err.print("[red]error:[/] give --data-dir or set FLEETROOM_AGENT_DATA_DIR")
        raise typer.Exit(2)
    doc = status(data_dir)
    if json_out:
        print(json.dumps(doc, indent=1))
        return
    out = Console()
    if not doc["version"]:
        out.print("profiles: shipped with this agent (no bundle installed)")
    else:
        out.print(f"profiles: bundle {doc['version']} ({doc['files']} files, {doc['source']}), "
                  f"expires {doc['expires_at']}" + (" [red](expired)[/]" if doc["expired"] else ""))
    if doc["last_check_at"]:
        out.print(f"last check {doc['last_check_at']}: {doc['last_error'] or doc['last_result']}")


from .cli_run import register as _register_run  # noqa: E402 - run, status, set-password

_register_run(app)


def main() -> None:
    """Console-script entry point."""
    app()

"""Command-line options shared by scan, probe and walk (credentials, timing, profiles).

Secrets given on the command line are visible in the process list; the help text
says so and points to ``--credentials FILE`` (or the ``FLEETROOM_SNMP_*``
environment variables) for anything but a quick test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .collect.credentials import (
    CredentialConfigError,
    CredentialSet,
    load_credential_file,
    make_credential,
)
from .snmp.types import Timing

CommunityOpt = Annotated[str | None, typer.Option(
    "--community", "-c", envvar="FLEETROOM_SNMP_COMMUNITY",
    help="v1/v2c community (default 'public').")]
VersionOpt = Annotated[str | None, typer.Option(
    "--snmp-version", "-v", help="1, 2c or 3 (default 2c, or 3 when --v3-user is given).")]
UserOpt = Annotated[str | None, typer.Option("--v3-user", "-u", help="SNMPv3 user name.")]
AuthProtoOpt = Annotated[str | None, typer.Option(
    "--auth-proto", help="MD5, SHA, SHA224, SHA256, SHA384, SHA512 (default SHA with a key).")]
AuthKeyOpt = Annotated[str | None, typer.Option(
    "--auth-key", envvar="FLEETROOM_SNMP_AUTH_KEY",
    help="SNMPv3 auth passphrase (prefer --credentials FILE or the environment variable).")]
PrivProtoOpt = Annotated[str | None, typer.Option(
    "--priv-proto",
    help="DES, 3DES, AES (=AES128), AES192, AES256, AES192C, AES256C (C = Cisco key extension).")]
PrivKeyOpt = Annotated[str | None, typer.Option(
    "--priv-key", envvar="FLEETROOM_SNMP_PRIV_KEY",
    help="SNMPv3 privacy passphrase (prefer --credentials FILE or the environment variable).")]
ContextOpt = Annotated[str, typer.Option("--context", help="SNMPv3 context name.")]
CredFileOpt = Annotated[Path | None, typer.Option(
    "--credentials", help="TOML file with several [[credentials]] sets, tried in order.",
    exists=True, dir_okay=False, readable=True)]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.05, max=60,
                                           help="Seconds per request.")]
RetriesOpt = Annotated[int, typer.Option("--retries", min=0, max=10)]
ProfilesOpt = Annotated[list[Path] | None, typer.Option(
    "--profiles", help="Extra profile directory (overrides shipped profiles by name).",
    exists=True, file_okay=False)]


@dataclass(frozen=True, slots=True)
class CredentialArgs:
    """The credential options as given, before validation."""

    community: str | None = None
    version: str | None = None
    user: str | None = None
    auth_proto: str | None = None
    auth_key: str | None = None
    priv_proto: str | None = None
    priv_key: str | None = None
    context: str = ""
    file: Path | None = None

    def sets(self) -> list[CredentialSet]:
        """Credential sets: the command-line one first (if any), then the file's."""
        sets: list[CredentialSet] = []
        inline = any(x is not None for x in (self.community, self.version, self.user,
                                             self.auth_key, self.priv_key))
        if inline or self.file is None:
            version = self.version or ("3" if self.user else "2c")
            sets.append(CredentialSet(make_credential(
                name="command-line", version=version, community=self.community,
                user=self.user, auth_proto=self.auth_proto, auth_key=self.auth_key,
                priv_proto=self.priv_proto, priv_key=self.priv_key, context=self.context)))
        if self.file is not None:
            sets.extend(load_credential_file(self.file))
        return sets


def credential_sets_or_exit(args: CredentialArgs) -> list[CredentialSet]:
    """Validated sets, or a clear message and exit code 2."""
    try:
        return args.sets()
    except CredentialConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def timing(timeout: float, retries: int, deadline: float | None = None) -> Timing:
    """Timing with a deadline that always covers the retries."""
    floor = timeout * (retries + 1) * 4
    return Timing(timeout=timeout, retries=retries, deadline=max(deadline or 30.0, floor))

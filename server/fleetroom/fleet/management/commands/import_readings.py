"""``manage.py import_readings FILE --tenant T``: load ``fleetroom-agent scan --json`` output."""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError

from fleetroom.fleet.ingest import TenantNotFound, import_stream, resolve_tenant
from fleetroom.fleet.services import DEFAULT_BATCH, IngestError


class Command(BaseCommand):
    """Import readings, one JSON document per line; bad lines are reported and skipped."""

    help = ("Import normalised readings (one JSON document per line, as written by "
            "`fleetroom-agent scan --json`; '-' reads standard input) for a site or customer.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        """FILE, --tenant, --agent-id, --batch-size, --json."""
        parser.add_argument("file", help="JSON-lines file, or '-' for standard input")
        parser.add_argument("--tenant", required=True,
                            help="site or customer: id, path (/1/5/9/) or names "
                                 "(Dealer/Customer/Site)")
        parser.add_argument("--agent-id", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
        parser.add_argument("--json", action="store_true", dest="json_out",
                            help="print the counts as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the import; exit status 1 when any line was rejected (the rest is stored)."""
        try:
            tenant = resolve_tenant(options["tenant"])
        except TenantNotFound as exc:
            raise CommandError(str(exc)) from exc
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        name = options["file"]
        stream: BinaryIO
        if name == "-":
            stream = sys.stdin.buffer
        else:
            try:
                stream = Path(name).open("rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise CommandError(f"cannot read {name}: {exc.strerror}") from exc
        try:
            report = import_stream(stream, tenant=tenant, agent_id=options["agent_id"],
                                   batch_size=options["batch_size"])
        except IngestError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        for number, message in report.errors:
            self.stderr.write(f"line {number}: {message}")
        for number, message in report.warnings:
            self.stderr.write(f"line {number}: warning: {message}")
        if options["json_out"]:
            self.stdout.write(json.dumps(report.as_dict()))
        else:
            self.stdout.write(
                f"lines read: {report.lines}\n"
                f"readings stored: {report.readings}\n"
                f"duplicates skipped: {report.duplicates}\n"
                f"new devices: {report.new_devices}\n"
                f"updated devices: {report.updated_devices}\n"
                f"errors: {len(report.errors)}")
        if report.errors:
            raise CommandError(f"{len(report.errors)} line(s) not imported (see above); "
                               "every other line was stored")

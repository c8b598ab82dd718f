"""``fleetroom manage publish_profiles``: sign the shipped profiles as the next bundle.

Agents fetch the newest bundle daily (``/agent/v1/profiles/latest``); run this
after a server upgrade that brings new profiles, and regularly (daily, from cron
or a scheduler) so the bundle agents hold never nears its expiry.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from fleetroom_profiles.bundle import MAX_LIFETIME, BundleError

from fleetroom.agents.bundles import DEFAULT_EXPIRES_DAYS, publish


class Command(BaseCommand):
    """Build, sign (server key) and store the next profile bundle."""

    help = ("Sign the profiles shipped with this server (or --source DIR) as the next "
            "profile bundle for agents; prints its version and file.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--expires-days, --source, --json."""
        parser.add_argument("--expires-days", type=int, default=DEFAULT_EXPIRES_DAYS,
                            help=f"days until agents refuse the bundle (1-{MAX_LIFETIME.days};"
                                 f" default {DEFAULT_EXPIRES_DAYS})")
        parser.add_argument("--source", type=Path, default=None,
                            help="a profile directory instead of the shipped profiles")
        parser.add_argument("--json", action="store_true", dest="json_out",
                            help="print the result as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        """Publish; a broken profile or an impossible expiry is an error, nothing stored."""
        from fleetroom.agents.keys import ServerKeyError, server_keys

        source: Path | None = options["source"]
        if source is not None and not source.is_dir():
            raise CommandError(f"{source} is not a directory")
        try:
            keys = server_keys()
            stored = publish(keys.signing_key, expires_days=options["expires_days"],
                             source=source)
        except (BundleError, ServerKeyError) as exc:
            raise CommandError(f"nothing published: {exc}") from exc
        if options["json_out"]:
            self.stdout.write(json.dumps({"version": stored.version, "path": str(stored.path),
                                          "key_id": keys.key_id}))
        else:
            self.stdout.write(f"published profile bundle {stored.version}: {stored.path} "
                              f"(signed by server key {keys.key_id})")

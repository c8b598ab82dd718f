"""``fleetroom manage unlock_user NAME``: lift a login lockout from the command line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from fleetroom.accounts import services


class Command(BaseCommand):
    """Unlock a username or e-mail address (also works for names that are no account)."""

    help = "Clear failed logins and lift the lockout of a username or e-mail address."

    def add_arguments(self, parser: CommandParser) -> None:
        """One positional argument: the name."""
        parser.add_argument("name", help="username or e-mail address")

    def handle(self, *args: Any, **options: Any) -> None:
        """Unlock and report how many failure records were removed."""
        removed = services.do_unlock(options["name"], acting_user=None)
        self.stdout.write(f"unlocked {options['name']} ({removed} attempt record(s) removed)")

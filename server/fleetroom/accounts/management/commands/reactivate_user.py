"""``fleetroom manage reactivate_user NAME``: re-enable a deactivated account."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleetroom.accounts import services
from fleetroom.accounts.models import User


class Command(BaseCommand):
    """The way back in when every administrator was deactivated for being idle."""

    help = "Reactivate a deactivated account; its idle time counts afresh from now."

    def add_arguments(self, parser: CommandParser) -> None:
        """One positional argument: the username."""
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        """Reactivate or fail with a clear message."""
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user named {options['username']!r}")
        services.do_reactivate_user(user, acting_user=None)
        self.stdout.write(f"reactivated {user.get_username()}")

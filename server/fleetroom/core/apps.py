"""App config for fleetroom.core."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _create_cache_table(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """The shared database cache's table, created with the schema on every ``migrate``
    (idempotent), so no command can meet a missing cache table."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)


class CoreConfig(AppConfig):
    """Cross-cutting pieces shared by every other app."""

    name = "fleetroom.core"
    label = "core"
    verbose_name = "Fleetroom core"

    def ready(self) -> None:
        """Hook the cache table onto migrate (once, for this app's signal only)."""
        post_migrate.connect(_create_cache_table, sender=self,
                             dispatch_uid="fleetroom.core.cache_table")

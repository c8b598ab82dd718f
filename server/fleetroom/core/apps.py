"""App config for fleetroom.core."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Cross-cutting pieces shared by every other app."""

    name = "fleetroom.core"
    label = "core"
    verbose_name = "Fleetroom core"

"""App config for fleetroom.fleet."""

from django.apps import AppConfig


class FleetConfig(AppConfig):
    """See the package docstring."""

    name = "fleetroom.fleet"
    label = "fleet"

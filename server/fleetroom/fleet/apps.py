"""App config for fleetroom.fleet."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FleetConfig(AppConfig):
    """Devices, readings and their retention tiers."""

    name = "fleetroom.fleet"
    label = "fleet"
    verbose_name = _("Fleet")

    def ready(self) -> None:
        """Declare the audit actions the fleet services write, with their data models."""
        from fleetroom.core import audit

        from .schemas import AUDIT_ACTIONS

        for action, schema in AUDIT_ACTIONS.items():
            audit.register_action(action, schema)

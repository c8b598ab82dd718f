"""App config for fleetroom.api."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApiConfig(AppConfig):
    """The REST API (django-ninja) and the per-user tokens it is used with."""

    name = "fleetroom.api"
    label = "api"
    verbose_name = _("API")

    def ready(self) -> None:
        """Register the token audit events and revoke tokens when accounts say so."""
        from fleetroom.api import audit_events, receivers

        audit_events.register()
        receivers.connect()

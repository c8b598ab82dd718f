"""App config for fleetroom.tenancy."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TenancyConfig(AppConfig):
    """The tenant tree, memberships, roles and access codes."""

    name = "fleetroom.tenancy"
    label = "tenancy"
    verbose_name = _("Tenancy")

    def ready(self) -> None:
        """Register the typed data of tenancy's audit events and the accounts hooks."""
        from fleetroom.tenancy import account_hooks, audit_events

        audit_events.register()
        account_hooks.register()

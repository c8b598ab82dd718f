"""App config for fleetroom.tenancy."""

from django.apps import AppConfig


class TenancyConfig(AppConfig):
    """See the package docstring."""

    name = "fleetroom.tenancy"
    label = "tenancy"

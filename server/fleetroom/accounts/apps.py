"""App config for fleetroom.accounts."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """See the package docstring."""

    name = "fleetroom.accounts"
    label = "accounts"

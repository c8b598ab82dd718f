"""App config for fleetroom.accounts."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, login security (allauth, MFA, axes lockout), session limits."""

    name = "fleetroom.accounts"
    label = "accounts"

    def ready(self) -> None:
        """Connect the signal receivers that tie allauth and axes to our policy."""
        from fleetroom.accounts import receivers

        receivers.connect()

"""App config for fleetroom.agents."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AgentsConfig(AppConfig):
    """Agents that report from customer networks, and everything they exchange."""

    name = "fleetroom.agents"
    label = "agents"
    verbose_name = _("Agents")

    def ready(self) -> None:
        """Declare the audit actions; connect the transports to the agent lifecycle.

        The MQTT receivers provision broker accounts at enrollment, delete them on
        revocation and push new commands; the mail receiver offers the intake
        address at enrollment.  Both do nothing when their section is not configured.
        """
        from fleetroom.agents import audit_events, mail_intake, mqtt_bridge

        audit_events.register()
        mail_intake.connect_signals()
        mqtt_bridge.connect_signals()

"""App config for fleetroom.agents."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AgentsConfig(AppConfig):
    """Agents that report from customer networks, and everything they exchange."""

    name = "fleetroom.agents"
    label = "agents"
    verbose_name = _("Agents")

"""Forms of the agents pages.

They offer only what the user could do (tenants where they manage agents) and
check the shape of the input; the services check again and decide.  The schedule
form takes its limits from :class:`fleetroom_protocol.messages.Schedule` itself,
so the page can never accept a schedule the protocol (and so the agent) refuses.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from annotated_types import Ge, Le
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from fleetroom_protocol.messages import Schedule
from pydantic import ValidationError as PydanticValidationError

from fleetroom.core.scoping import restrict
from fleetroom.tenancy.forms import TenantChoiceField, expiry_field
from fleetroom.tenancy.models import Tenant, TenantKind
from fleetroom.tenancy.permissions import Permission

from . import tokens
from .conf import config
from .display import duration_text
from .models import AgentStatus, CommandKind
from .services import MAX_TOKEN_USES

AGENT_TENANT_KINDS: Final = (TenantKind.SITE, TenantKind.CUSTOMER)

ISSUABLE: Final = (CommandKind.SCAN_NOW, CommandKind.READ_DEVICE, CommandKind.UPDATE_PROFILES,
                   CommandKind.DIAGNOSTICS)
"""Commands a person issues with a button; a schedule change goes through the
schedule form (the agent receives it with its next reply)."""

HOUR: Final = 3600
DAY: Final = 86400
METER_READ_PRESETS: Final[tuple[tuple[int, Any], ...]] = (
    (3 * HOUR, _("Every 3 hours")),
    (6 * HOUR, _("Every 6 hours")),
    (12 * HOUR, _("Every 12 hours")),
    (DAY, _("Daily")),
    (2 * DAY, _("Every 2 days")),
    (7 * DAY, _("Weekly")),
    (14 * DAY, _("Every 2 weeks")),
    (30 * DAY, _("Monthly (every 30 days)")),
    (92 * DAY, _("Quarterly (every 92 days)")),
)


def schedule_bounds(name: str) -> tuple[int, int]:
    """(minimum, maximum) of a numeric :class:`Schedule` field, from the protocol model."""
    low = high = None
    for item in Schedule.model_fields[name].metadata:
        if isinstance(item, Ge):
            low = int(item.ge)  # type: ignore[call-overload]
        elif isinstance(item, Le):
            high = int(item.le)  # type: ignore[call-overload]
    if low is None or high is None:  # pragma: no cover - the protocol model changed
        msg = f"Schedule.{name} has no bounds"
        raise LookupError(msg)
    return low, high


def _tenants_managed(user: Any) -> QuerySet[Tenant]:
    return (restrict(Tenant.objects.all(), user, Permission.MANAGE_AGENTS)
            .filter(kind__in=AGENT_TENANT_KINDS).order_by("path"))


def _network(value: str) -> str:
    try:
        return tokens.clean_network(value)
    except ValueError:
        raise forms.ValidationError(
            _("Enter a network such as 192.0.2.0/24 (host bits zero)."), code="network",
        ) from None


class AgentFilterForm(forms.Form):
    """Search and filters of the agent list (a GET form; bad values are ignored)."""

    q = forms.CharField(label=_("Search"), max_length=200, required=False)
    status = forms.ChoiceField(label=_("Status"), required=False,
                               choices=[("", _("Any status")), *AgentStatus.choices])
    overdue = forms.BooleanField(label=_("Only agents not reporting on schedule"),
                                 required=False)

    def values(self) -> tuple[str, str, bool]:
        """(search, status, overdue only); empty filters for invalid input."""
        if not self.is_valid():
            return "", "", False
        data = self.cleaned_data
        return data["q"].strip(), data["status"], bool(data["overdue"])


class EnrollmentTokenForm(forms.Form):
    """A new enrollment token for a site, or a customer without sites."""

    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none())
    label = forms.CharField(label=_("Label (optional)"), max_length=200, required=False,
                            help_text=_("For your own overview, e.g. the machine or the "
                                        "installer it is for."))
    expires_at = expiry_field(_("Token expires"), required=True)
    max_uses = forms.IntegerField(label=_("Maximum uses"), min_value=1,
                                  max_value=MAX_TOKEN_USES, initial=1,
                                  help_text=_("How many agents may enroll with it."))
    source_network = forms.CharField(
        label=_("Source network (optional)"), max_length=64, required=False,
        help_text=_("Only agents connecting from this network may use the token, "
                    "e.g. 192.0.2.0/24."))

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"] = TenantChoiceField(
            queryset=_tenants_managed(user), label=_("Site or customer"),
            help_text=_("Agents enrolled with this token report for it."))
        self.order_fields(["tenant", "label", "expires_at", "max_uses", "source_network"])
        if not self.is_bound:
            self.initial.setdefault("expires_at", timezone.localtime(
                timezone.now() + timedelta(hours=config().token_default_hours),
            ).replace(second=0, microsecond=0))

    def clean_expires_at(self) -> datetime:
        """In the future and within ``[agents] token_max_days``."""
        value: datetime = self.cleaned_data["expires_at"]
        now = timezone.now()
        days = config().token_max_days
        if value <= now:
            raise forms.ValidationError(_("The time must lie in the future."), code="past")
        if value > now + timedelta(days=days):
            raise forms.ValidationError(
                _("An enrollment token must expire within %(days)d days."), code="expiry",
                params={"days": days})
        return value

    def clean_source_network(self) -> str:
        """A CIDR network with zero host bits, in canonical form (or empty)."""
        return _network(self.cleaned_data["source_network"])


class ReenrollForm(forms.Form):
    """A one-use token that gives an existing agent new keys."""

    source_network = forms.CharField(
        label=_("Source network (optional)"), max_length=64, required=False,
        help_text=_("Only accept the re-enrollment from this network, e.g. 192.0.2.0/24."))

    def clean_source_network(self) -> str:
        """A CIDR network with zero host bits, in canonical form (or empty)."""
        return _network(self.cleaned_data["source_network"])


class RenameForm(forms.Form):
    """The name people know the agent by."""

    name = forms.CharField(label=_("Name"), max_length=200)


class ConfirmForm(forms.Form):
    """An empty form: the POST itself is the confirmation (CSRF-checked)."""


class CommandForm(forms.Form):
    """One command for the agent; ``target`` only for "read a device"."""

    kind = forms.ChoiceField(label=_("Command"),
                             choices=[(k.value, k.label) for k in ISSUABLE])
    target = forms.CharField(
        label=_("Device address"), max_length=255, required=False,
        help_text=_("IP address, host name or host:port; it must be inside the agent's "
                    "local allowlist."))

    def clean(self) -> dict[str, Any]:
        """A target for "read a device", none for the others."""
        data = super().clean() or {}
        reads = data.get("kind") == CommandKind.READ_DEVICE
        data["target"] = (data.get("target") or "").strip() if reads else ""
        if reads and not data["target"]:
            self.add_error("target", _("Enter the address of the device to read."))
        return data

    def args(self) -> dict[str, Any]:
        """The command's arguments as the agent expects them."""
        target = self.cleaned_data.get("target")
        return {"target": target} if target else {}


def _meter_read_choices(current: int | None) -> list[tuple[int, Any]]:
    choices: list[tuple[int, Any]] = list(METER_READ_PRESETS)
    if current is not None and current not in dict(choices):
        choices.append((current, _("Every %(interval)s (current)") % {
            "interval": duration_text(current)}))
        choices.sort()
    return choices


class ScheduleForm(forms.Form):
    """When the agent works; the limits are the protocol's (:class:`Schedule`)."""

    status_poll_min = forms.IntegerField(
        label=_("Status poll every (minutes)"),
        help_text=_("How often the agent reports its state and fetches commands."))
    meter_read_s = forms.TypedChoiceField(label=_("Meter reads"), coerce=int)
    month_end_read = forms.BooleanField(
        label=_("Extra meter read at the end of every month"), required=False)
    rediscovery_h = forms.IntegerField(
        label=_("Look for new devices every (hours)"))
    profile_check = forms.TimeField(
        label=_("Daily device-profile check at (agent's local time)"),
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        input_formats=["%H:%M"])

    def __init__(self, *args: Any, current: Schedule, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {
            "status_poll_min": current.status_poll_s // 60,
            "meter_read_s": current.meter_read_s,
            "month_end_read": current.month_end_read,
            "rediscovery_h": current.rediscovery_s // HOUR,
            "profile_check": current.profile_check,
        })
        super().__init__(*args, **kwargs)
        self.current = current
        low, high = schedule_bounds("status_poll_s")
        poll = self.fields["status_poll_min"]
        assert isinstance(poll, forms.IntegerField)
        self._bound(poll, -(-low // 60), high // 60)
        low, high = schedule_bounds("rediscovery_s")
        rediscovery = self.fields["rediscovery_h"]
        assert isinstance(rediscovery, forms.IntegerField)
        self._bound(rediscovery, -(-low // HOUR), high // HOUR)
        choice = self.fields["meter_read_s"]
        assert isinstance(choice, forms.TypedChoiceField)
        choice.choices = _meter_read_choices(current.meter_read_s)

    @staticmethod
    def _bound(f: forms.IntegerField, low: int, high: int) -> None:
        """Limits known only at run time (from the protocol model): validators and the
        ``min``/``max`` attributes the browser checks."""
        f.min_value, f.max_value = low, high
        f.validators += [MinValueValidator(low), MaxValueValidator(high)]
        f.widget.attrs.update({"min": str(low), "max": str(high)})

    def clean(self) -> dict[str, Any]:
        """The whole schedule must pass the protocol model."""
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            self.schedule = Schedule.model_validate({
                **self.current.model_dump(),
                "status_poll_s": data["status_poll_min"] * 60,
                "meter_read_s": data["meter_read_s"],
                "month_end_read": bool(data["month_end_read"]),
                "rediscovery_s": data["rediscovery_h"] * HOUR,
                "profile_check": data["profile_check"].strftime("%H:%M"),
            })
        except PydanticValidationError as exc:
            fields = {"status_poll_s": "status_poll_min", "rediscovery_s": "rediscovery_h"}
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else ""
                target = fields.get(name, name)
                self.add_error(target if target in self.fields else None,
                               _("Outside what agents accept (%(why)s).") % {
                                   "why": err["msg"]})
        return data

"""Forms of the fleet pages: the device list's filters and the device edit form.

Both take their choices from the user's scope, so a value outside it is not a
valid choice; the views turn an out-of-scope tenant into a 404 (never a hint that it
exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import Http404, QueryDict
from django.utils.translation import gettext_lazy as _

from fleetroom.tenancy.models import Tenant, TenantKind
from fleetroom.tenancy.permissions import Permission

from . import services
from .models import Device, Tag
from .selectors import SORTS, STATE_RANK, STATES, DeviceQuery

MAX_SEARCH_LENGTH = 200
"""Longer search text is cut, not refused: the list still answers."""


def tenant_label(t: Tenant) -> str:
    """``Customer › Site`` for a site, the name for anything else."""
    if t.kind in (TenantKind.SITE, TenantKind.LOCATION) and t.parent is not None:
        return f"{t.parent.name} › {t.name}"
    return t.name


class DeviceFilterForm(forms.Form):
    """The query string of the device list and the export (GET, so no CSRF).

    Lenient where a wrong value reveals nothing (an unknown state or sort is
    ignored); strict where it could (a tenant outside the scope is a 404).
    """

    q = forms.CharField(label=_("Search"), required=False)
    state = forms.ChoiceField(label=_("State"), required=False)
    tenant = forms.TypedChoiceField(label=_("Customer or site"), required=False, coerce=int,
                                    empty_value=None)
    manufacturer = forms.CharField(label=_("Manufacturer"), required=False)
    supplies = forms.ChoiceField(label=_("Supplies"), required=False, choices=[
        ("", _("Any")), ("low", _("Low, empty or full"))])
    sort = forms.CharField(required=False)

    def __init__(self, data: QueryDict, *, tenants: list[Tenant]) -> None:
        super().__init__(data)
        self.tenants = {t.pk: t for t in tenants}
        state_field = self.fields["state"]
        assert isinstance(state_field, forms.ChoiceField)
        state_field.choices = [("", _("Any state")), *((s.value, s.label) for s in STATES)]
        tenant_field = self.fields["tenant"]
        assert isinstance(tenant_field, forms.TypedChoiceField)
        tenant_field.choices = [("", _("All")),
                                *((t.pk, tenant_label(t)) for t in tenants)]

    def query(self) -> DeviceQuery:
        """The cleaned query; :class:`~django.http.Http404` for a tenant not in scope."""
        self.is_valid()
        if "tenant" in self.errors:
            raise Http404(_("Not found."))
        data: dict[str, Any] = self.cleaned_data
        tenant_id = data.get("tenant")
        state = data.get("state") or ""
        sort = data.get("sort") or ""
        return DeviceQuery(
            q=(data.get("q") or "")[:MAX_SEARCH_LENGTH],
            state=state if state in STATE_RANK else "",
            tenant=self.tenants[tenant_id] if tenant_id is not None else None,
            manufacturer=(data.get("manufacturer") or "")[:MAX_SEARCH_LENGTH],
            supplies=data.get("supplies") or "",
            sort=sort if sort.removeprefix("-") in SORTS else "")


if TYPE_CHECKING:
    _TenantModelChoiceField = forms.ModelChoiceField[Tenant]
else:  # Django's classes are not subscriptable at run time (no django-stubs-ext here)
    _TenantModelChoiceField = forms.ModelChoiceField


class TenantChoiceField(_TenantModelChoiceField):
    """A tenant select labelled ``Customer › Site``."""

    def label_from_instance(self, obj: Tenant) -> str:
        """See :func:`tenant_label`."""
        return tenant_label(obj)


class DeviceEditForm(forms.Form):
    """What a person may change on a device (POST with CSRF)."""

    tenant = TenantChoiceField(
        label=_("Site"), queryset=Tenant.objects.none(),
        help_text=_("If an agent of another site still reads this device, its next "
                    "reading moves the device back there."))
    location = TenantChoiceField(label=_("Location"), queryset=Tenant.objects.none(),
                                 required=False, empty_label=_("No location"))
    tags = forms.CharField(label=_("Tags"), required=False, max_length=2000,
                           help_text=_("Separate tags with commas."))
    asset_number = forms.CharField(label=_("Asset number"), required=False,
                                   max_length=Device._meta.get_field("asset_number").max_length)
    cost_centre = forms.CharField(label=_("Cost centre"), required=False,
                                  max_length=Device._meta.get_field("cost_centre").max_length)

    def __init__(self, *args: Any, user: Any, device: Device, **kwargs: Any) -> None:
        if "initial" not in kwargs:
            own = Tag.objects.filter(tenant_id=device.tenant_id, devices=device).order_by("name")
            kwargs["initial"] = {
                "tenant": device.tenant_id, "location": device.location_id,
                "tags": ", ".join(t.name for t in own),
                "asset_number": device.asset_number, "cost_centre": device.cost_centre,
            }
        super().__init__(*args, **kwargs)
        editable = Tenant.objects.for_user(user, Permission.EDIT_DEVICES)
        tenant_field = self.fields["tenant"]
        location_field = self.fields["location"]
        assert isinstance(tenant_field, TenantChoiceField)
        assert isinstance(location_field, TenantChoiceField)
        tenant_field.queryset = (editable.filter(kind__in=services.EDITABLE_TENANT_KINDS)
                                 .select_related("parent").order_by("path"))
        location_field.queryset = (editable.filter(kind=TenantKind.LOCATION)
                                   .select_related("parent").order_by("path"))

    def clean_tags(self) -> list[str]:
        """Comma-separated text → clean, unique names (see :func:`services.clean_tag_names`)."""
        return services.clean_tag_names(str(self.cleaned_data.get("tags") or "").split(","))

    def clean(self) -> dict[str, Any]:
        """The location must lie inside the chosen site."""
        data = super().clean() or {}
        tenant, location = data.get("tenant"), data.get("location")
        if tenant is not None and location is not None and not location.path.startswith(
                tenant.path):
            self.add_error("location", ValidationError(
                _("This location is not in the chosen site."), code="location"))
        return data

"""Forms of the administration pages.

The forms only *offer* what the administrator could grant: tenants, sites and
roles come from the administrator's own scope (:func:`fleetroom.core.scoping.restrict`),
permission checkboxes from what they hold where they hold the managing
permission.  That is convenience, not the control: a forged POST with a value
outside those choices is refused by the form, and anything inside them is still
checked by the service (:func:`fleetroom.tenancy.services.check_grantable`), which
knows the exact tenant and sites of the grant.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from fleetroom.core.scoping import membership_permissions, permissions_on, restrict
from fleetroom.tenancy.models import Membership, Role, Tenant, TenantKind
from fleetroom.tenancy.permissions import ROLE_PERMISSIONS, BuiltinRole, Permission
from fleetroom.tenancy.selectors import live_memberships
from fleetroom.tenancy.services import CODE_MAX_LIFETIME, CODE_MAX_USES

if TYPE_CHECKING:
    _ModelChoiceField = forms.ModelChoiceField[Tenant]
    _ModelMultipleChoiceField = forms.ModelMultipleChoiceField[Tenant]
else:  # Django's classes are not subscriptable at run time (no django-stubs-ext here)
    _ModelChoiceField = forms.ModelChoiceField
    _ModelMultipleChoiceField = forms.ModelMultipleChoiceField

SITE_KINDS = (TenantKind.SITE, TenantKind.LOCATION)
DATETIME_INPUT_FORMAT = "%Y-%m-%dT%H:%M"
"""What ``<input type="datetime-local">`` sends (in the user's time zone, here the server's)."""


# --- helpers shared by forms and views --------------------------------------------------------

def path_labels(tenants: Iterable[Tenant]) -> dict[int, str]:
    """``pk → "Customer › Site › Room"`` using only names from ``tenants`` itself.

    Ancestors outside the given (already scoped) set are left out, so a label
    never shows a name the viewer is not allowed to see.
    """
    nodes = {t.pk: t for t in tenants}
    labels: dict[int, str] = {}
    for t in nodes.values():
        parts = [nodes[a].name for a in t.ancestor_ids if a in nodes]
        labels[t.pk] = " › ".join([*parts, t.name])
    return labels


def grantable_permission_sets(user: Any, managing: Permission) -> list[frozenset[Permission]]:
    """What ``user`` holds at each place where their memberships attach and ``managing`` holds.

    A user's permissions only change where a membership attaches (its tenant, or
    its sites), so evaluating there finds every maximal set the user could hand
    out.  Used to decide what the forms offer; the services decide what is allowed.
    """
    places: dict[int, Tenant] = {}
    for m in live_memberships(user).prefetch_related("sites"):
        if m.site_restricted:
            for s in m.sites.all():
                if s.path.startswith(m.tenant.path):
                    places[s.pk] = s
        else:
            places[m.tenant.pk] = m.tenant
    out: list[frozenset[Permission]] = []
    for place in places.values():
        held = permissions_on(user, place)
        if managing in held:
            out.append(held)
    return out


def offered_permissions(user: Any, managing: Permission) -> list[Permission]:
    """Every permission ``user`` holds somewhere they also hold ``managing`` (in enum order)."""
    union: set[Permission] = set()
    for held in grantable_permission_sets(user, managing):
        union |= held
    return [p for p in Permission if p in union]


def offered_builtin_roles(user: Any) -> list[BuiltinRole]:
    """Built-in roles whose whole permission set ``user`` could grant at one place at least."""
    sets = grantable_permission_sets(user, Permission.MANAGE_USERS)
    return [r for r in BuiltinRole if any(ROLE_PERMISSIONS[r] <= held for held in sets)]


def permission_labels(perms: Iterable[str]) -> list[str]:
    """Translated labels of stored permission values (unknown values are skipped)."""
    known = {p.value: p.label for p in Permission}
    return [str(known[p]) for p in perms if p in known]


def membership_role_label(m: Membership) -> str:
    """How a membership's permissions are named: the role, the custom role, or "individual"."""
    if m.role:
        try:
            return str(BuiltinRole(m.role).label)
        except ValueError:
            return m.role
    if m.custom_role is not None:
        return m.custom_role.name
    if m.via_access_code_id is not None:
        return str(_("Access code"))
    return str(_("Individual permissions"))


def membership_permission_labels(m: Membership) -> list[str]:
    """The permissions a membership gives, translated."""
    return permission_labels(sorted(p.value for p in membership_permissions(m)))


# --- fields -----------------------------------------------------------------------------------

def datetime_widget() -> forms.DateTimeInput:
    """A native date-and-time picker (no script needed, works on phones)."""
    return forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_INPUT_FORMAT)


class TenantChoiceField(_ModelChoiceField):
    """A tenant select labelled with scoped paths (see :func:`path_labels`)."""

    def __init__(self, queryset: QuerySet[Tenant], **kwargs: Any) -> None:
        super().__init__(queryset=queryset, **kwargs)
        self.labels = path_labels(queryset)

    def label_from_instance(self, obj: Tenant) -> str:
        """The node's path within the viewer's scope, and its kind."""
        return f"{self.labels.get(obj.pk, obj.name)} ({obj.get_kind_display()})"


class TenantMultipleChoiceField(_ModelMultipleChoiceField):
    """A checkbox list of sites labelled with scoped paths."""

    def __init__(self, queryset: QuerySet[Tenant], labels_from: QuerySet[Tenant],
                 **kwargs: Any) -> None:
        super().__init__(queryset=queryset, widget=forms.CheckboxSelectMultiple, **kwargs)
        self.labels = path_labels(labels_from)

    def label_from_instance(self, obj: Tenant) -> str:
        """The site's path within the viewer's scope."""
        return self.labels.get(obj.pk, obj.name)


def _sites_in_scope(user: Any, managing: Permission, tenant: Tenant | None) -> QuerySet[Tenant]:
    qs = restrict(Tenant.objects.filter(kind__in=SITE_KINDS), user, managing)
    if tenant is not None:
        qs = qs.filter(path__startswith=tenant.path).exclude(pk=tenant.pk)
    return qs.order_by("path")


def _chosen_tenant(form: forms.Form, field: str, qs: QuerySet[Tenant]) -> Tenant | None:
    """The tenant picked in the bound data (or the initial one), if it is a valid choice."""
    raw = form.data.get(field) if form.is_bound else form.initial.get(field)
    if isinstance(raw, Tenant):
        raw = raw.pk
    try:
        pk = int(str(raw))
    except (TypeError, ValueError):
        return None
    return qs.filter(pk=pk).first()


# --- tenants ----------------------------------------------------------------------------------

class TenantNameForm(forms.Form):
    """Name of a new or renamed node (the service normalises and checks uniqueness)."""

    name = forms.CharField(label=_("Name"), max_length=200)


class TenantMoveForm(forms.Form):
    """Where to move a node: parents of an allowed kind that the user manages."""

    parent = TenantChoiceField(queryset=Tenant.objects.none(), label=_("New parent"))

    def __init__(self, *args: Any, parents: QuerySet[Tenant], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parent"] = TenantChoiceField(queryset=parents, label=_("New parent"))


class DeactivateForm(forms.Form):
    """Confirmation of a deactivation, with an optional reason for the audit log."""

    reason = forms.CharField(label=_("Reason (optional)"), max_length=200, required=False)


# --- memberships and users --------------------------------------------------------------------

class RoleSourceForm(forms.Form):
    """Base of the forms with a "role" select.

    It offers the built-in roles the user could grant somewhere, then the custom
    roles in the user's scope.  Values are ``builtin:<role>`` / ``custom:<id>``;
    :meth:`role_source` turns one into the keyword arguments of the services.
    """

    def setup_role_field(self, user: Any, *, allow_keep: bool = False,
                         current: Membership | None = None) -> None:
        """Fill the role choices for ``user`` (plus the membership's current role)."""
        builtin = offered_builtin_roles(user)
        if current is not None and current.role:
            try:
                cur = BuiltinRole(current.role)
            except ValueError:
                cur = None
            if cur is not None and cur not in builtin:
                builtin.append(cur)
        self._custom_roles = {
            r.pk: r for r in Role.objects.for_user(user, Permission.MANAGE_USERS)
            .select_related("tenant").order_by("tenant__path", "name")}
        if current is not None and current.custom_role is not None:
            self._custom_roles.setdefault(current.custom_role.pk, current.custom_role)
        # An explicit empty first choice: a browser must not preselect the first role.
        choices: list[tuple[Any, Any]] = [("", _("Keep as it is") if allow_keep else "---------")]
        choices.append((_("Built-in roles"), [(f"builtin:{r.value}", r.label) for r in builtin]))
        if self._custom_roles:
            choices.append((_("Custom roles"),
                            [(f"custom:{r.pk}", f"{r.name} ({r.tenant.name})")
                             for r in self._custom_roles.values()]))
        field = self.fields["role"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices
        field.required = not allow_keep

    def role_source(self, value: str) -> dict[str, Any]:
        """``{"role": …}`` or ``{"custom_role": …}``, or ``{}`` for "keep"."""
        kind, _sep, ident = value.partition(":")
        if kind == "builtin":
            return {"role": ident}
        if kind == "custom":
            return {"custom_role": self._custom_roles[int(ident)]}
        return {}


class MembershipFieldsForm(RoleSourceForm):
    """Base of the forms creating a membership: tenant, role, site restriction, expiry."""

    def setup_membership_fields(self, user: Any) -> None:
        """Choices from ``user``'s manage_users scope; sites narrowed to the chosen tenant."""
        tenants = restrict(Tenant.objects.all(), user, Permission.MANAGE_USERS).order_by("path")
        self.fields["tenant"] = TenantChoiceField(
            queryset=tenants, label=_("Tenant"),
            help_text=_("Where the access applies: this tenant and everything below it."))
        chosen = _chosen_tenant(self, "tenant", tenants)
        all_sites = _sites_in_scope(user, Permission.MANAGE_USERS, None)
        self.fields["sites"] = TenantMultipleChoiceField(
            queryset=_sites_in_scope(user, Permission.MANAGE_USERS, chosen),
            labels_from=tenants, required=False, label=_("Only these sites"),
            help_text=_("Leave empty for the whole tenant."))
        if chosen is None:
            self.fields["sites"].queryset = all_sites  # type: ignore[attr-defined]
        self.setup_role_field(user)


def expiry_field(label: Any, *, required: bool = False) -> forms.DateTimeField:
    """An optional date-and-time that must lie in the future."""
    return forms.DateTimeField(label=label, required=required, widget=datetime_widget(),
                               input_formats=[DATETIME_INPUT_FORMAT, "%Y-%m-%d %H:%M"])


def _future(value: datetime | None) -> datetime | None:
    if value is not None and value <= timezone.now():
        raise forms.ValidationError(_("The time must lie in the future."), code="past")
    return value


class MembershipGrantForm(MembershipFieldsForm):
    """Give an existing user a role on a tenant the administrator manages."""

    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none())
    role = forms.ChoiceField(label=_("Role"))
    sites = forms.ModelMultipleChoiceField(queryset=Tenant.objects.none(), required=False)
    expires_at = expiry_field(_("Access ends (optional)"))

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_membership_fields(user)
        self.order_fields(["tenant", "role", "sites", "expires_at"])

    def clean_expires_at(self) -> datetime | None:
        """An access that ended already would be pointless."""
        return _future(self.cleaned_data.get("expires_at"))


class MembershipChangeForm(RoleSourceForm):
    """Change a membership's role, site restriction or end (its tenant stays)."""

    role = forms.ChoiceField(label=_("Role"), required=False)
    sites = forms.ModelMultipleChoiceField(queryset=Tenant.objects.none(), required=False)
    expires_at = expiry_field(_("Access ends (optional)"))

    def __init__(self, *args: Any, user: Any, membership: Membership, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tenant = membership.tenant
        self.setup_role_field(user, allow_keep=True, current=membership)
        scoped = _sites_in_scope(user, Permission.MANAGE_USERS, tenant)
        current = list(membership.sites.all()) if membership.site_restricted else []
        ids = {s.pk for s in scoped} | {s.pk for s in current}
        self.fields["sites"] = TenantMultipleChoiceField(
            queryset=Tenant.objects.filter(pk__in=ids).order_by("path"),
            labels_from=Tenant.objects.filter(pk__in=ids | {tenant.pk}),
            required=False, label=_("Only these sites"),
            help_text=_("Leave empty for the whole tenant."))
        if not self.is_bound:
            self.initial.setdefault("sites", [s.pk for s in current])
            if membership.expires_at:
                self.initial.setdefault("expires_at", timezone.localtime(membership.expires_at))

    def clean_expires_at(self) -> datetime | None:
        """An access that ended already would be pointless."""
        return _future(self.cleaned_data.get("expires_at"))


class UserCreateForm(MembershipFieldsForm):
    """A new account and its first membership; no password (the person sets it by link)."""

    username = forms.CharField(label=_("Username"), max_length=150,
                               validators=[UnicodeUsernameValidator()],
                               help_text=_("Letters, digits and @ . + - _ only."))
    email = forms.EmailField(label=_("E-mail address"))
    display_name = forms.CharField(label=_("Display name"), max_length=150, required=False)
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none())
    role = forms.ChoiceField(label=_("Role"))
    sites = forms.ModelMultipleChoiceField(queryset=Tenant.objects.none(), required=False)
    expires_at = expiry_field(_("Access ends (optional)"))

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_membership_fields(user)
        self.order_fields(["username", "email", "display_name", "tenant", "role", "sites",
                           "expires_at"])

    def clean_expires_at(self) -> datetime | None:
        """An access that ended already would be pointless."""
        return _future(self.cleaned_data.get("expires_at"))


# --- custom roles -----------------------------------------------------------------------------

def permission_field(offered: Iterable[Permission], extra: Iterable[str] = ()) -> forms.Field:
    """Checkboxes for ``offered`` permissions (plus ``extra`` already stored values)."""
    values = [p.value for p in offered]
    for v in extra:
        if v not in values:
            values.append(v)
    known = {p.value: p.label for p in Permission}
    return forms.MultipleChoiceField(
        label=_("Permissions"), widget=forms.CheckboxSelectMultiple,
        choices=[(v, known[v]) for v in values if v in known])


class RoleForm(forms.Form):
    """Create (with a tenant) or edit (without) a custom role."""

    name = forms.CharField(label=_("Name"), max_length=100)

    def __init__(self, *args: Any, user: Any, role: Role | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if role is None:
            tenants = restrict(Tenant.objects.exclude(kind__in=SITE_KINDS), user,
                               Permission.MANAGE_USERS).order_by("path")
            self.fields["tenant"] = TenantChoiceField(
                queryset=tenants, label=_("Tenant"),
                help_text=_("The role can be used here and everywhere below."))
            self.order_fields(["tenant", "name"])
        self.fields["permissions"] = permission_field(
            offered_permissions(user, Permission.MANAGE_USERS),
            role.permissions if role is not None else ())
        if role is not None and not self.is_bound:
            self.initial.setdefault("name", role.name)
            self.initial.setdefault("permissions", list(role.permissions))


# --- access codes -----------------------------------------------------------------------------

class AccessCodeForm(forms.Form):
    """A new access code: never more than the creator holds (the service checks per site)."""

    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none())
    label = forms.CharField(label=_("Label (optional)"), max_length=200, required=False,
                            help_text=_("For your own overview, e.g. who the code is for."))
    sites = forms.ModelMultipleChoiceField(queryset=Tenant.objects.none(), required=False)
    expires_at = expiry_field(_("Code expires"), required=True)
    max_uses = forms.IntegerField(label=_("Maximum uses"), min_value=1, max_value=CODE_MAX_USES,
                                  initial=1)
    membership_expires_at = expiry_field(_("Access granted by the code ends (optional)"))

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        managing = Permission.MANAGE_ACCESS_CODES
        tenants = restrict(Tenant.objects.all(), user, managing).order_by("path")
        self.fields["tenant"] = TenantChoiceField(
            queryset=tenants, label=_("Tenant"),
            help_text=_("Whoever redeems the code gets access here."))
        chosen = _chosen_tenant(self, "tenant", tenants)
        self.fields["sites"] = TenantMultipleChoiceField(
            queryset=_sites_in_scope(user, managing, chosen), labels_from=tenants,
            required=False, label=_("Only these sites"),
            help_text=_("Leave empty for the whole tenant."))
        self.fields["permissions"] = permission_field(offered_permissions(user, managing))
        self.order_fields(["tenant", "label", "permissions", "sites", "expires_at", "max_uses",
                           "membership_expires_at"])
        if not self.is_bound:
            self.initial.setdefault("expires_at", timezone.localtime(
                timezone.now() + timedelta(days=7)).replace(second=0, microsecond=0))

    def clean_expires_at(self) -> datetime | None:
        """Within the service's limit (90 days), in the future."""
        value = _future(self.cleaned_data.get("expires_at"))
        if value is not None and value > timezone.now() + CODE_MAX_LIFETIME:
            raise forms.ValidationError(_("An access code must expire within 90 days."),
                                        code="expiry")
        return value

    def clean_membership_expires_at(self) -> datetime | None:
        """In the future, when given."""
        return _future(self.cleaned_data.get("membership_expires_at"))


class RedeemForm(forms.Form):
    """The code as the user types it (case, spaces and dashes do not matter)."""

    code = forms.CharField(label=_("Access code"), max_length=100, strip=True,
                           widget=forms.TextInput(attrs={"autocomplete": "off",
                                                         "autocapitalize": "characters",
                                                         "spellcheck": "false"}))


class RevokeCodeForm(forms.Form):
    """Revoking a code; optionally also ending the access it already granted."""

    revoke_memberships = forms.BooleanField(
        label=_("Also end the access this code has granted"), required=False)

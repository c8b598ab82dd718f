"""Granular permissions and the built-in roles, as code data.

A *role* is only a name for a fixed set of permissions; what the scoping code
checks is always a single :class:`Permission`.  Keeping the built-in roles in
code (not in a table) means every installation has the same, reviewed sets and
a migration is never needed to fix one; dealers who need something else define
a :class:`~fleetroom.tenancy.models.Role` (a named permission set of their own,
never larger than what its creator holds).

Permissions, and why each exists:

``view_fleet``          see devices, counters, supply levels, alerts, agents' status
``edit_devices``        rename/locate devices, set contract fields, hide or retire devices
``manage_agents``       enrol, configure, update and retire collection agents
``manage_sites``        create, rename, move and deactivate sites and locations
``manage_tenants``      create, rename, move and deactivate dealers and customers
``manage_users``        grant, change and revoke memberships; define custom roles
``manage_access_codes`` create and revoke access codes (docuFORM "Zugangscodes")
``manage_rules``        alert/notification rules and channels
``manage_tickets``      open, update and close service tickets
``order_supplies``      place and approve toner/supply orders
``view_reports``        see reports and dashboards
``export_data``         download exports (CSV/XLSX/API bulk) — data leaves the product
``view_audit``          read the audit log
``view_mailroom``       see mailroom shipments and tracking
``manage_mailroom``     book, scan and hand over mailroom items
``manage_platform``     platform settings, device profiles; meaningful on the operator node
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models
from django.utils.translation import gettext_lazy as _


class Permission(models.TextChoices):
    """One thing a membership may allow; checked by :mod:`fleetroom.core.scoping`."""

    VIEW_FLEET = "view_fleet", _("View fleet")
    EDIT_DEVICES = "edit_devices", _("Edit devices")
    MANAGE_AGENTS = "manage_agents", _("Manage agents")
    MANAGE_SITES = "manage_sites", _("Manage sites and locations")
    MANAGE_TENANTS = "manage_tenants", _("Manage dealers and customers")
    MANAGE_USERS = "manage_users", _("Manage users and roles")
    MANAGE_ACCESS_CODES = "manage_access_codes", _("Manage access codes")
    MANAGE_RULES = "manage_rules", _("Manage alert rules")
    MANAGE_TICKETS = "manage_tickets", _("Manage service tickets")
    ORDER_SUPPLIES = "order_supplies", _("Order supplies")
    VIEW_REPORTS = "view_reports", _("View reports")
    EXPORT_DATA = "export_data", _("Export data")
    VIEW_AUDIT = "view_audit", _("View audit log")
    VIEW_MAILROOM = "view_mailroom", _("View mailroom")
    MANAGE_MAILROOM = "manage_mailroom", _("Manage mailroom")
    MANAGE_PLATFORM = "manage_platform", _("Manage platform settings")


class BuiltinRole(models.TextChoices):
    """The roles every installation has; their permission sets are in :data:`ROLE_PERMISSIONS`."""

    OPERATOR_ADMIN = "operator_admin", _("Platform administrator")
    DEALER_ADMIN = "dealer_admin", _("Dealer administrator")
    DEALER_TECHNICIAN = "dealer_technician", _("Dealer technician")
    CUSTOMER_ADMIN = "customer_admin", _("Customer administrator")
    CUSTOMER_VIEWER = "customer_viewer", _("Customer viewer")


P = Permission

ROLE_PERMISSIONS: dict[BuiltinRole, frozenset[Permission]] = {
    # Everything, on the whole platform (the membership sits on the operator node).
    BuiltinRole.OPERATOR_ADMIN: frozenset(Permission),
    # Everything below the dealer except platform settings.
    BuiltinRole.DEALER_ADMIN: frozenset(Permission) - {P.MANAGE_PLATFORM},
    # Field service: fleet, agents, tickets, supplies — but no users, codes or exports.
    BuiltinRole.DEALER_TECHNICIAN: frozenset({
        P.VIEW_FLEET, P.EDIT_DEVICES, P.MANAGE_AGENTS, P.VIEW_REPORTS, P.MANAGE_TICKETS,
        P.ORDER_SUPPLIES,
    }),
    # The customer's own administrator: its sites, users, codes, rules, exports, audit.
    # Agents and tenants stay with the dealer, who installs and contracts them.
    BuiltinRole.CUSTOMER_ADMIN: frozenset({
        P.VIEW_FLEET, P.EDIT_DEVICES, P.MANAGE_SITES, P.MANAGE_USERS, P.MANAGE_ACCESS_CODES,
        P.MANAGE_RULES, P.MANAGE_TICKETS, P.ORDER_SUPPLIES, P.VIEW_REPORTS, P.EXPORT_DATA,
        P.VIEW_AUDIT, P.VIEW_MAILROOM, P.MANAGE_MAILROOM,
    }),
    # Read-only.
    BuiltinRole.CUSTOMER_VIEWER: frozenset({P.VIEW_FLEET, P.VIEW_REPORTS, P.VIEW_MAILROOM}),
}


def normalise_permissions(values: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated permission values; raises ``ValueError`` on an unknown one.

    Stored permission sets are always in this form so that two equal sets are
    equal JSON (audit hashes and comparisons rely on it).
    """
    out: set[str] = set()
    for value in values:
        out.add(Permission(value).value)
    return sorted(out)


def as_permissions(values: Iterable[str]) -> frozenset[Permission]:
    """A frozenset of :class:`Permission` from stored strings; unknown ones are dropped.

    Dropping (instead of raising) is the fail-closed choice when reading: a value
    written by a newer release that this one does not know grants nothing.
    """
    known = {p.value for p in Permission}
    return frozenset(Permission(v) for v in values if v in known)

"""``fleetroom manage seed_demo``: the demo's tenants and one user per built-in role.

Why a command and not fixtures: every mutation goes through the same service
functions (and therefore the same checks and audit events) as the web UI, and
the passwords are fresh random ones on every run, printed once — there are no
default accounts, not even in the demo.  Running it again is safe: existing
tenants are reused and the demo users get new passwords.
"""

from __future__ import annotations

import json
import secrets
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from fleetroom.accounts.models import User
from fleetroom.accounts.services import do_set_password
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.models import Membership, Tenant, TenantKind
from fleetroom.tenancy.permissions import BuiltinRole
from fleetroom.tenancy.services import do_create_tenant, do_grant_membership

OPERATOR = "Fleetroom Platform"
DEALER = "Demo Dealer GmbH"
CUSTOMERS = (("Muster AG", "Hamburg"), ("Beispiel KG", "München"))

# (username, role, where: "operator" | "dealer" | index of the customer)
USERS: tuple[tuple[str, BuiltinRole, str | int], ...] = (
    ("operator", BuiltinRole.OPERATOR_ADMIN, "operator"),
    ("dealer-admin", BuiltinRole.DEALER_ADMIN, "dealer"),
    ("technician", BuiltinRole.DEALER_TECHNICIAN, "dealer"),
    ("customer-admin", BuiltinRole.CUSTOMER_ADMIN, 0),
    ("customer-viewer", BuiltinRole.CUSTOMER_VIEWER, 1),
)


def _passphrase() -> str:
    """20 random characters from an unambiguous alphabet (meets the 15-character policy)."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    groups = ["".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4)]
    return "-".join(groups)


def _child(parent: Tenant | None, kind: TenantKind, name: str) -> Tenant:
    found = Tenant.objects.filter(parent=parent, name=name).first()
    return found or do_create_tenant(parent, kind, name, SYSTEM)


class Command(BaseCommand):
    """Create (or refresh) the demo tenants and users and print the credentials."""

    help = ("Create the demo's operator, dealer, two customers with a site each and "
            "one user per role.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        """``--json`` prints one JSON object (for the demo script) instead of a table."""
        parser.add_argument("--json", action="store_true", dest="json_out")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        """Build the tree, grant the memberships, set fresh passwords, print them."""
        operator = _child(None, TenantKind.OPERATOR, OPERATOR)
        dealer = _child(operator, TenantKind.DEALER, DEALER)
        sites: list[Tenant] = []
        customers: list[Tenant] = []
        for customer_name, city in CUSTOMERS:
            customer = _child(dealer, TenantKind.CUSTOMER, customer_name)
            customers.append(customer)
            sites.append(_child(customer, TenantKind.SITE, f"{customer_name} {city}"))
        places: dict[str | int, Tenant] = {"operator": operator, "dealer": dealer,
                                           0: customers[0], 1: customers[1]}
        accounts = []
        for username, role, where in USERS:
            tenant = places[where]
            password = _passphrase()
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User(username=username, email=f"{username}@demo.invalid")
                user.set_unusable_password()
                user.save()
            # Through the service: policy check, sessions ended, audit event.
            do_set_password(user, password, acting_user=None)
            if not Membership.objects.filter(user=user, tenant=tenant, role=role).exists():
                do_grant_membership(user, tenant, acting_user=SYSTEM, role=role)
            accounts.append({"username": username, "password": password, "role": role.value,
                             "role_label": str(role.label), "tenant": tenant.name})
        result = {"sites": [{"name": s.name, "path": s.path} for s in sites],
                  "accounts": accounts}
        if options["json_out"]:
            self.stdout.write(json.dumps(result))
            return
        for a in accounts:
            self.stdout.write(f"{a['username']:16} {a['password']}  {a['role_label']} "
                              f"({a['tenant']})")

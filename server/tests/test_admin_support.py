"""Helpers shared by the administration page tests (this module holds no tests).

One world for all of them, built through the real services (so every node and
membership has its audit row, as in production):

    Platform (operator)
    ├── Dealer One ─┬── Customer A ─┬── A North ── Room 1     (site, location)
    │               │               └── A South
    │               └── Customer B ──── B Main                (the sibling customer)
    └── Dealer Two ──── Customer Z ──── Z Main                (the foreign dealer)

People: an operator admin and a dealer admin (both must use MFA, so they get a
TOTP), customer admins of A, B and Z, a customer viewer of A, a customer admin of A
restricted to the site A North, and someone without any membership.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.test import Client
from django.urls import reverse
from django.utils import timezone
from fleetroom.accounts.models import User
from fleetroom.accounts.testing import enable_totp, make_user
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy import services
from fleetroom.tenancy.models import AccessCode, Membership, Role, Tenant


@dataclass
class World:
    """The tenants, people and a few objects of each kind, per relation to Customer A."""

    op: Tenant
    d1: Tenant
    d2: Tenant
    ca: Tenant
    cb: Tenant
    cz: Tenant
    a_north: Tenant
    a_south: Tenant
    room: Tenant
    b_main: Tenant
    z_main: Tenant
    op_admin: User
    d1_admin: User
    a_admin: User
    a_viewer: User
    a_north_admin: User
    b_admin: User
    z_admin: User
    z_viewer: User
    nobody: User
    role_a: Role
    role_b: Role
    role_z: Role
    code_a: AccessCode
    code_b: AccessCode
    code_z: AccessCode

    def membership(self, user: User, tenant: Tenant) -> Membership:
        """The direct membership of ``user`` on ``tenant``."""
        return Membership.objects.get(user=user, tenant=tenant, via_access_code__isnull=True)


def soon(days: int = 7) -> Any:
    """A time ``days`` from now."""
    return timezone.now() + timedelta(days=days)


def grant(user: User, tenant: Tenant, role: str, sites: list[Tenant] | None = None) -> Membership:
    """A membership granted by the system (setup only)."""
    return services.do_grant_membership(user, tenant, acting_user=SYSTEM, role=role, sites=sites)


def build_world() -> World:
    """Create the world above (inside the test's database transaction)."""
    mk = services.do_create_tenant
    op = mk(None, "operator", "Platform", SYSTEM)
    d1 = mk(op, "dealer", "Dealer One", SYSTEM)
    d2 = mk(op, "dealer", "Dealer Two", SYSTEM)
    ca = mk(d1, "customer", "Customer A", SYSTEM)
    cb = mk(d1, "customer", "Customer B", SYSTEM)
    cz = mk(d2, "customer", "Customer Z", SYSTEM)
    a_north = mk(ca, "site", "A North", SYSTEM)
    a_south = mk(ca, "site", "A South", SYSTEM)
    room = mk(a_north, "location", "Room 1", SYSTEM)
    b_main = mk(cb, "site", "B Main", SYSTEM)
    z_main = mk(cz, "site", "Z Main", SYSTEM)

    op_admin = make_user("op-admin")
    grant(op_admin, op, "operator_admin")
    enable_totp(op_admin)
    d1_admin = make_user("d1-admin")
    grant(d1_admin, d1, "dealer_admin")
    enable_totp(d1_admin)
    a_admin = make_user("a-admin", first_name="Anna Admin")
    grant(a_admin, ca, "customer_admin")
    a_viewer = make_user("a-viewer", first_name="Viktor Viewer")
    grant(a_viewer, ca, "customer_viewer")
    a_north_admin = make_user("a-north-admin")
    grant(a_north_admin, ca, "customer_admin", sites=[a_north])
    b_admin = make_user("b-admin")
    grant(b_admin, cb, "customer_admin")
    z_admin = make_user("z-admin")
    grant(z_admin, cz, "customer_admin")
    z_viewer = make_user("z-viewer")
    grant(z_viewer, cz, "customer_viewer")
    nobody = make_user("nobody")

    role_a = services.do_create_role(ca, "A readers", ["view_fleet"], acting_user=SYSTEM)
    role_b = services.do_create_role(cb, "B readers", ["view_fleet"], acting_user=SYSTEM)
    role_z = services.do_create_role(cz, "Z readers", ["view_fleet"], acting_user=SYSTEM)
    code_a, _ = services.do_create_access_code(a_admin, ca, ["view_fleet"], None, soon())
    code_b, _ = services.do_create_access_code(b_admin, cb, ["view_fleet"], None, soon())
    code_z, _ = services.do_create_access_code(z_admin, cz, ["view_fleet"], None, soon())
    return World(op=op, d1=d1, d2=d2, ca=ca, cb=cb, cz=cz, a_north=a_north, a_south=a_south,
                 room=room, b_main=b_main, z_main=z_main, op_admin=op_admin, d1_admin=d1_admin,
                 a_admin=a_admin, a_viewer=a_viewer, a_north_admin=a_north_admin,
                 b_admin=b_admin, z_admin=z_admin, z_viewer=z_viewer, nobody=nobody,
                 role_a=role_a, role_b=role_b, role_z=role_z, code_a=code_a, code_b=code_b,
                 code_z=code_z)


def client_for(user: User | None, **kwargs: Any) -> Client:
    """A browser session of ``user`` (anonymous for ``None``)."""
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def url(name: str, *args: Any) -> str:
    """``reverse("tenancy:<name>", args=args)``."""
    return reverse(f"tenancy:{name}", args=args)


def local_input(dt: Any) -> str:
    """A time as ``<input type="datetime-local">`` sends it (server time zone)."""
    return timezone.localtime(dt).strftime("%Y-%m-%dT%H:%M")


def messages_of(response: Any) -> list[str]:
    """The flash messages a followed response rendered."""
    return [str(m) for m in response.context["messages"]] if response.context else []

"""Shared pieces of the SSO tests (server/tests/test_sso_*.py)."""

from __future__ import annotations

import os
from typing import Any

from fleetroom.accounts.sso.conf import LDAP_BACKEND, django_settings
from fleetroom.config import SsoConfig

IN_CI = os.environ.get("CI", "").lower() == "true"


def apply_sso(settings: Any, sso: SsoConfig) -> None:
    """Switch the running test to ``sso`` exactly as ``settings.py`` would at start-up
    (pytest-django's ``settings`` fixture undoes it after the test)."""
    base = [b for b in settings.AUTHENTICATION_BACKENDS if b != LDAP_BACKEND]
    for name, value in django_settings(sso, backends=base).items():
        setattr(settings, name, value)


def make_tenants() -> dict[str, Any]:
    """Operator → Dealer A → Customer 1, Customer 2 (each with a site)."""
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.tenancy import services

    t: dict[str, Any] = {}
    t["op"] = services.do_create_tenant(None, "operator", "Platform", SYSTEM)
    t["dA"] = services.do_create_tenant(t["op"], "dealer", "Dealer A", SYSTEM)
    t["c1"] = services.do_create_tenant(t["dA"], "customer", "Customer 1", SYSTEM)
    t["s11"] = services.do_create_tenant(t["c1"], "site", "Site 1.1", SYSTEM)
    t["c2"] = services.do_create_tenant(t["dA"], "customer", "Kunde Zwei", SYSTEM)
    return t

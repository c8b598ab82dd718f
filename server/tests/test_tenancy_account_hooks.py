"""Tenancy's answers to the accounts policy hooks (MFA, account administration, words)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from fleetroom.accounts.models import User
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy import account_hooks, services

policy = pytest.importorskip("fleetroom.accounts.policy")

pytestmark = pytest.mark.django_db


def mkuser(name: str) -> User:
    return User.objects.create_user(username=name, email=f"{name}@example.com")


@pytest.fixture
def world():
    op = services.do_create_tenant(None, "operator", "Platform", SYSTEM)
    dealer = services.do_create_tenant(op, "dealer", "Kopierhaus Nord", SYSTEM)
    cust = services.do_create_tenant(dealer, "customer", "Bäckerei Schmidt", SYSTEM)
    site = services.do_create_tenant(cust, "site", "Filiale 1", SYSTEM)
    return {"op": op, "dealer": dealer, "cust": cust, "site": site}


def grant(user, tenant, role, **kw):
    return services.do_grant_membership(user, tenant, role=role, acting_user=SYSTEM, **kw)


def test_hooks_are_registered():
    assert account_hooks.requires_mfa in policy.MFA_REQUIRED_CHECKS
    assert account_hooks.may_administer in policy.ACCOUNT_ADMIN_CHECKS
    assert account_hooks.context_words in policy.CONTEXT_WORD_PROVIDERS


def test_mfa_for_operator_and_dealer_memberships(world):
    tech, viewer, expired = mkuser("tech"), mkuser("viewer"), mkuser("expired")
    grant(tech, world["dealer"], "dealer_technician")
    grant(viewer, world["cust"], "customer_viewer")
    grant(expired, world["dealer"], "dealer_admin",
          expires_at=timezone.now() + timedelta(seconds=5))
    assert account_hooks.requires_mfa(tech)
    assert not account_hooks.requires_mfa(viewer)
    assert account_hooks.requires_mfa(expired)
    services.do_deactivate(world["dealer"], SYSTEM)
    assert not account_hooks.requires_mfa(tech)  # nothing left to protect


def test_administer_needs_all_of_the_targets_memberships(world):
    cadmin, dadmin, viewer, tech = (mkuser(n) for n in ("cadmin", "dadmin", "viewer", "tech"))
    grant(cadmin, world["cust"], "customer_admin")
    grant(dadmin, world["dealer"], "dealer_admin")
    grant(viewer, world["cust"], "customer_viewer")
    grant(tech, world["dealer"], "dealer_technician")
    grant(tech, world["cust"], "customer_viewer")
    assert account_hooks.may_administer(cadmin, viewer)
    assert account_hooks.may_administer(dadmin, viewer)
    assert account_hooks.may_administer(dadmin, tech)
    assert not account_hooks.may_administer(cadmin, tech)  # tech also works for the dealer
    assert not account_hooks.may_administer(viewer, cadmin)
    assert not account_hooks.may_administer(cadmin, mkuser("stranger"))


def test_context_words_are_employer_names(world):
    u = mkuser("u")
    grant(u, world["cust"], "customer_viewer", sites=[world["site"]])
    assert sorted(account_hooks.context_words(u)) == ["Bäckerei Schmidt", "Kopierhaus Nord"]

"""Deactivation after 90 days without a login (time passed in, no clock mocking)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from fleetroom.accounts import policy, services, signals, tasks
from fleetroom.accounts.models import User
from fleetroom.accounts.testing import PASSWORD, make_user, post_login

pytestmark = pytest.mark.django_db
NOW = timezone.now()


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def user_seen(name, *, last_login_days=None, joined_days=200, **extra) -> User:
    user = make_user(name, **extra)
    user.date_joined = NOW - timedelta(days=joined_days)
    user.last_login = NOW - timedelta(days=last_login_days) if last_login_days else None
    user.save()
    return user


def test_idle_users_are_deactivated():
    away = user_seen("away", last_login_days=91)
    recent = user_seen("recent", last_login_days=89)
    never_old = user_seen("never_old", joined_days=91)
    never_new = user_seen("never_new", joined_days=10)
    revoked = []

    def revoke_tokens(sender, user, reason, acting_user, **kwargs):
        revoked.append((user.username, reason, acting_user))

    signals.user_deactivated.connect(revoke_tokens)
    try:
        ids = services.deactivate_idle_users(now=NOW)
    finally:
        signals.user_deactivated.disconnect(revoke_tokens)
    assert sorted(ids) == sorted([away.pk, never_old.pk])
    for user in (away, recent, never_old, never_new):
        user.refresh_from_db()
    assert not away.is_active
    assert away.deactivated_at == NOW
    assert away.deactivation_reason == services.DEACTIVATION_REASON_IDLE
    assert not never_old.is_active
    assert recent.is_active
    assert never_new.is_active
    assert sorted(revoked) == [("away", "idle", None), ("never_old", "idle", None)]
    # Running again changes nothing.
    assert services.deactivate_idle_users(now=NOW) == []


def test_deactivated_user_cannot_log_in():
    user_seen("away", last_login_days=120)
    services.deactivate_idle_users(now=NOW)
    client = Client()
    post_login(client, "away", PASSWORD)
    assert "_auth_user_id" not in client.session


def test_reactivation_restarts_the_clock():
    user = user_seen("away", last_login_days=120)
    services.deactivate_idle_users(now=NOW)
    call_command("reactivate_user", "away")
    user.refresh_from_db()
    assert user.is_active
    assert user.deactivated_at is None
    assert user.deactivation_reason == ""
    assert services.deactivate_idle_users(now=timezone.now() + timedelta(days=1)) == []
    assert services.deactivate_idle_users(
        now=timezone.now() + timedelta(days=91)) == [user.pk]


def test_per_user_limit_hook():
    dealer = user_seen("dealer", last_login_days=40, is_staff=True)
    customer = user_seen("customer", last_login_days=40)

    def thirty_days_for_staff(user):
        return timedelta(days=30) if user.is_staff else None

    policy.register_idle_limit(thirty_days_for_staff)
    try:
        assert services.deactivate_idle_users(now=NOW) == [dealer.pk]
    finally:
        policy.IDLE_LIMITS.remove(thirty_days_for_staff)
    customer.refresh_from_db()
    assert customer.is_active


def test_the_daily_task_runs_the_service():
    user = user_seen("away", joined_days=365)
    assert tasks.deactivate_idle_users.call_local() == [user.pk]


def test_only_administrators_deactivate_others():
    target = make_user("target")
    with pytest.raises(PermissionDenied):
        services.do_deactivate_user(target, reason="spite", acting_user=make_user("eve"))
    with pytest.raises(PermissionDenied):  # staff status alone is no licence
        services.do_deactivate_user(target, reason="left",
                                    acting_user=make_user("staff", is_staff=True))
    services.do_deactivate_user(target, reason="left",
                                acting_user=make_user("root", is_superuser=True))
    target.refresh_from_db()
    assert not target.is_active


def test_a_failing_token_revocation_rolls_back_that_user_only():
    stuck = user_seen("stuck", last_login_days=100)
    other = user_seen("other", last_login_days=100)

    def revoke_tokens(sender, user, **kwargs):
        if user.username == "stuck":
            raise RuntimeError("token store unreachable")

    signals.user_deactivated.connect(revoke_tokens)
    try:
        assert services.deactivate_idle_users(now=NOW) == [other.pk]
    finally:
        signals.user_deactivated.disconnect(revoke_tokens)
    stuck.refresh_from_db()
    assert stuck.is_active  # rolled back as a whole; the next run tries again
    assert stuck.deactivated_at is None


def test_idle_limit_per_role_from_config(settings):
    from fleetroom.core.scoping import SYSTEM
    from fleetroom.tenancy.models import TenantKind
    from fleetroom.tenancy.permissions import BuiltinRole
    from fleetroom.tenancy.services import do_create_tenant, do_grant_membership

    security = settings.CONFIG.security.model_copy(update={
        "deactivate_after_days_by_role": {"customer_viewer": 180, "dealer_admin": 30}})
    settings.CONFIG = settings.CONFIG.model_copy(update={"security": security})
    op = do_create_tenant(None, TenantKind.OPERATOR, "Op", SYSTEM)
    dealer = do_create_tenant(op, TenantKind.DEALER, "Dealer", SYSTEM)
    customer = do_create_tenant(dealer, TenantKind.CUSTOMER, "Customer", SYSTEM)
    viewer = user_seen("viewer", last_login_days=120)  # 120 < 180: stays
    do_grant_membership(viewer, customer, acting_user=SYSTEM, role=BuiltinRole.CUSTOMER_VIEWER)
    admin = user_seen("cadmin", last_login_days=120)  # no per-role value: default 90
    do_grant_membership(admin, customer, acting_user=SYSTEM, role=BuiltinRole.CUSTOMER_ADMIN)
    both = user_seen("both", last_login_days=40)  # viewer 180 and dealer admin 30: 30
    do_grant_membership(both, customer, acting_user=SYSTEM, role=BuiltinRole.CUSTOMER_VIEWER)
    do_grant_membership(both, dealer, acting_user=SYSTEM, role=BuiltinRole.DEALER_ADMIN)
    nobody = user_seen("nobody", last_login_days=95)  # no membership: default 90
    assert sorted(services.deactivate_idle_users(now=NOW)) == sorted(
        [admin.pk, both.pk, nobody.pk])
    viewer.refresh_from_db()
    assert viewer.is_active


def test_per_role_config_refuses_unknown_roles(tmp_path):
    from fleetroom import config

    (tmp_path / config.CONFIG_FILE).write_text(
        'secret_key = "' + "s" * 60 + '"\n[security]\n'
        "deactivate_after_days_by_role = { viewer = 10 }\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="unknown role 'viewer'"):
        config.load({"FLEETROOM_DATA_DIR": str(tmp_path)})

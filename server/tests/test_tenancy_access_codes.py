"""Access codes: never more than the creator holds, single/limited use, no oracle, lockout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from fleetroom.accounts.models import User
from fleetroom.core.audit import verify_chain
from fleetroom.core.models import AuditEvent
from fleetroom.core.scoping import SYSTEM, scope
from fleetroom.tenancy import access_codes, services
from fleetroom.tenancy.models import AccessCode, LockoutCounter, Membership, Tenant
from fleetroom.tenancy.permissions import ROLE_PERMISSIONS, BuiltinRole, Permission
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db

IP = "198.51.100.7"


def mkuser(name: str, **extra) -> User:
    return User.objects.create_user(username=name, email=f"{name}@example.com", **extra)


def soon(days: int = 7):
    return timezone.now() + timedelta(days=days)


@pytest.fixture
def world():
    op = services.do_create_tenant(None, "operator", "Platform", SYSTEM)
    dealer = services.do_create_tenant(op, "dealer", "Dealer", SYSTEM)
    cust = services.do_create_tenant(dealer, "customer", "Customer", SYSTEM)
    other = services.do_create_tenant(dealer, "customer", "Other", SYSTEM)
    sites = [services.do_create_tenant(cust, "site", f"Site {i}", SYSTEM) for i in range(4)]
    other_site = services.do_create_tenant(other, "site", "Elsewhere", SYSTEM)
    admin = mkuser("cadmin")
    services.do_grant_membership(admin, cust, role="customer_admin", acting_user=SYSTEM)
    return {"op": op, "dealer": dealer, "cust": cust, "other": other, "sites": sites,
            "other_site": other_site, "admin": admin}


def make_code(world, perms=("view_fleet",), sites=None, max_uses=1, **kw):
    return services.do_create_access_code(world["admin"], world["cust"], list(perms), sites,
                                          kw.pop("expires_at", soon()), max_uses, **kw)


def test_code_format_entropy_and_storage(world):
    code, text = make_code(world)
    groups = text.split("-")
    assert [len(g) for g in groups] == [4] * 8
    assert access_codes.SECRET_LEN * 5 >= 128
    assert set(text.replace("-", "")) <= set(access_codes.ALPHABET)
    stored = AccessCode.objects.get(pk=code.pk)
    assert text.replace("-", "")[access_codes.LOOKUP_LEN:] not in (stored.secret_hash,
                                                                  stored.lookup_id)
    assert len(stored.secret_hash) == 64
    assert stored.lookup_id == text.replace("-", "")[:access_codes.LOOKUP_LEN]
    ev = AuditEvent.objects.get(action="access_code.created")
    assert text.replace("-", "")[access_codes.LOOKUP_LEN:] not in str(ev.data)
    _, text2 = make_code(world)
    assert text2 != text


def test_redeem_grants_exactly_the_restricted_membership(world):
    s0, s1 = world["sites"][:2]
    code, text = make_code(world, perms=["view_fleet", "view_reports"], sites=[s0],
                           membership_expires_at=soon(30))
    guest = mkuser("guest")
    # typed in lower case, with spaces instead of dashes, O for 0: still the code
    typed = text.lower().replace("-", " ").replace("0", "o")
    m = services.do_redeem_access_code(guest, typed, IP)
    assert m.via_access_code_id == code.pk
    assert m.permissions == ["view_fleet", "view_reports"]
    assert m.site_restricted
    assert list(m.sites.all()) == [s0]
    assert m.created_by_id == world["admin"].pk
    assert m.expires_at is not None
    assert scope(guest, Permission.VIEW_FLEET).prefixes == (s0.path,)
    assert scope(guest, Permission.EDIT_DEVICES).is_empty
    assert Tenant.objects.for_user(guest, "view_reports").filter(pk=s1.pk).count() == 0
    code.refresh_from_db()
    assert code.use_count == 1
    actions = list(AuditEvent.objects.filter(actor=guest).order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["access_code.redeemed", "membership.granted"]
    assert AuditEvent.objects.get(action="access_code.redeemed").ip == IP
    assert verify_chain() == []


def test_single_use_and_max_uses(world):
    _, text = make_code(world)
    services.do_redeem_access_code(mkuser("a"), text, IP)
    with pytest.raises(ValidationError) as exc:
        services.do_redeem_access_code(mkuser("b"), text, "198.51.100.8")
    assert exc.value.messages == [str(services.INVALID_CODE)]
    code, text = make_code(world, max_uses=3)
    for name in ("c", "d", "e"):
        services.do_redeem_access_code(mkuser(name), text, None)
    with pytest.raises(ValidationError):
        services.do_redeem_access_code(mkuser("f"), text, None)
    code.refresh_from_db()
    assert code.use_count == 3
    assert Membership.objects.filter(via_access_code=code).count() == 3


def test_same_user_cannot_redeem_twice(world):
    _, text = make_code(world, max_uses=5)
    u = mkuser("twice")
    services.do_redeem_access_code(u, text, None)
    with pytest.raises(ValidationError):
        services.do_redeem_access_code(u, text, None)
    assert Membership.objects.filter(user=u).count() == 1


def _messages(fn) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        fn()
    return exc.value.messages


def test_no_oracle_one_message_for_every_kind_of_bad_code(world):
    expired, t_expired = make_code(world)
    AccessCode.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    _used, t_used = make_code(world)
    services.do_redeem_access_code(mkuser("first"), t_used, None)
    revoked, t_revoked = make_code(world)
    services.do_revoke_access_code(revoked, acting_user=world["admin"])
    _, t_good = make_code(world)
    wrong_secret = t_good[:-1] + ("2" if t_good[-1] != "2" else "3")
    unknown = "-".join(["ZZZZ"] * 8)
    candidates = [t_expired, t_used, t_revoked, wrong_secret, unknown, "nonsense", ""]
    # several users, so no lockout interferes
    seen = {tuple(_messages(lambda c=c, i=i: services.do_redeem_access_code(
        mkuser(f"probe{i}"), c, None))) for i, c in enumerate(candidates)}
    assert seen == {(str(services.INVALID_CODE),)}
    reasons = set(AuditEvent.objects.filter(action="access_code.failed")
                  .values_list("data__reason", flat=True))
    assert reasons == {"expired", "used_up", "revoked", "wrong_secret", "unknown", "malformed"}
    # the failures about a real code are in that tenant's log; unknown ones on the platform's
    assert AuditEvent.objects.filter(action="access_code.failed", tenant=world["cust"]).count() == 4


def test_lockout_after_five_failures_per_user(world):
    _, good = make_code(world)
    u = mkuser("guesser")
    for i in range(5):
        ip = f"203.0.113.{i}"  # different addresses: the user's own counter locks
        assert _messages(lambda ip=ip: services.do_redeem_access_code(
            u, "-".join(["ABCD"] * 8), ip)) == [str(services.INVALID_CODE)]
    # locked: even the right code is refused, with the lockout message
    assert _messages(lambda: services.do_redeem_access_code(u, good, "203.0.113.99")) == [
        str(services.LOCKED_OUT)]
    assert not Membership.objects.filter(user=u).exists()
    assert AuditEvent.objects.filter(action="access_code.locked_out").count() == 1
    # after the cool-off it works again, and success clears the user's counter
    LockoutCounter.objects.update(locked_until=timezone.now() - timedelta(seconds=1),
                                  last_failure_at=timezone.now() - timedelta(hours=1))
    services.do_redeem_access_code(u, good, "203.0.113.99")
    assert not LockoutCounter.objects.filter(key__contains=f":user:{u.pk}").exists()


def test_lockout_per_address_across_users(world):
    _, good = make_code(world)
    for i in range(5):
        with pytest.raises(ValidationError):
            services.do_redeem_access_code(mkuser(f"sock{i}"), "-".join(["ABCD"] * 8), IP)
    fresh = mkuser("innocent-looking")
    assert _messages(lambda: services.do_redeem_access_code(fresh, good, IP)) == [
        str(services.LOCKED_OUT)]
    services.do_redeem_access_code(fresh, good, "192.0.2.1")  # elsewhere is fine


def test_ipv6_counts_per_64(world):
    for i in range(5):
        with pytest.raises(ValidationError):
            services.do_redeem_access_code(mkuser(f"v6-{i}"), "bad", f"2001:db8:1:2::{i + 1}")
    with pytest.raises(ValidationError) as exc:
        services.do_redeem_access_code(mkuser("v6-x"), "bad", "2001:db8:1:2:ffff::1")
    assert exc.value.messages == [str(services.LOCKED_OUT)]


def test_failures_spread_over_time_do_not_lock(world):
    u = mkuser("slow")
    for _ in range(4):
        with pytest.raises(ValidationError):
            services.do_redeem_access_code(u, "bad", None)
    LockoutCounter.objects.update(last_failure_at=timezone.now() - timedelta(hours=1))
    for _ in range(4):
        with pytest.raises(ValidationError) as exc:
            services.do_redeem_access_code(u, "bad", None)
        assert exc.value.messages == [str(services.INVALID_CODE)]


def test_prune_keeps_live_counters(world):
    from fleetroom.tenancy import lockout

    for i in range(5):
        with pytest.raises(ValidationError):
            services.do_redeem_access_code(mkuser(f"p{i}"), "bad", IP)
    assert LockoutCounter.objects.count() == 6  # five users and one address
    assert lockout.prune() == 0  # locked and recent: kept
    assert lockout.prune(timezone.now() + timedelta(hours=1)) == 6
    assert not LockoutCounter.objects.exists()


def test_code_stops_working_when_creator_loses_rights(world):
    _, text = make_code(world, perms=["edit_devices"])
    m = Membership.objects.get(user=world["admin"])
    services.do_change_membership(m, role="customer_viewer", acting_user=SYSTEM)
    with pytest.raises(ValidationError):
        services.do_redeem_access_code(mkuser("late"), text, None)
    assert AuditEvent.objects.filter(action="access_code.failed",
                                     data__reason="creator_lacks_permissions").exists()


def test_revoke_can_end_the_memberships_it_created(world):
    code, text = make_code(world, max_uses=2)
    guest = mkuser("guest")
    services.do_redeem_access_code(guest, text, None)
    viewer = mkuser("viewer")
    services.do_grant_membership(viewer, world["cust"], role="customer_viewer",
                                 acting_user=SYSTEM)
    with pytest.raises(PermissionDenied):
        services.do_revoke_access_code(code, acting_user=viewer)
    services.do_revoke_access_code(code, acting_user=world["admin"], revoke_memberships=True)
    assert not Membership.objects.filter(user=guest).exists()
    assert AuditEvent.objects.get(action="access_code.revoked").data == {
        "lookup_id": code.lookup_id, "memberships_revoked": 1}


def test_creation_limits(world):
    with pytest.raises(ValidationError):
        make_code(world, expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ValidationError):
        make_code(world, expires_at=soon(91))
    with pytest.raises(ValidationError):
        make_code(world, max_uses=0)
    with pytest.raises(ValidationError):
        make_code(world, perms=[])
    with pytest.raises(ValidationError):
        make_code(world, sites=[world["other_site"]])
    viewer = mkuser("viewer")
    services.do_grant_membership(viewer, world["cust"], role="customer_viewer",
                                 acting_user=SYSTEM)
    with pytest.raises(ValidationError):  # no manage_access_codes
        services.do_create_access_code(viewer, world["cust"], ["view_fleet"], None, soon())


def test_site_restricted_creator_only_for_their_sites(world):
    s0, s1 = world["sites"][:2]
    local = mkuser("local-admin")
    services.do_grant_membership(local, world["cust"], role="customer_admin", sites=[s0],
                                 acting_user=SYSTEM)
    with pytest.raises(ValidationError):  # the whole customer is more than they have
        services.do_create_access_code(local, world["cust"], ["view_fleet"], None, soon())
    with pytest.raises(ValidationError):
        services.do_create_access_code(local, world["cust"], ["view_fleet"], [s0, s1], soon())
    services.do_create_access_code(local, world["cust"], ["view_fleet"], [s0], soon())


CUSTOMER_ADMIN = sorted(ROLE_PERMISSIONS[BuiltinRole.CUSTOMER_ADMIN])


@pytest.mark.parametrize("creator_sites", [None, (0, 1)])
def test_hypothesis_codes_never_exceed_the_creator(world, creator_sites):
    """Random permission and site subsets: creation succeeds iff both are within the
    creator's own (a customer admin, optionally restricted to sites 0 and 1)."""
    sites = world["sites"]
    creator = mkuser(f"creator-{creator_sites}")
    allowed_sites = [sites[i] for i in creator_sites] if creator_sites else None
    services.do_grant_membership(creator, world["cust"], role="customer_admin",
                                 sites=allowed_sites, acting_user=SYSTEM)
    held = set(CUSTOMER_ADMIN)

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(perms=st.sets(st.sampled_from([p.value for p in Permission]), min_size=1),
           site_idx=st.sets(st.integers(0, 3)))
    def check(perms, site_idx):
        chosen = [sites[i] for i in sorted(site_idx)]
        perms_ok = perms <= held
        if creator_sites is None:
            sites_ok = True
        else:  # a site-restricted creator must name sites, and only theirs
            sites_ok = bool(site_idx) and site_idx <= set(creator_sites)
        with transaction.atomic():
            try:
                code, text = services.do_create_access_code(
                    creator, world["cust"], sorted(perms), chosen, soon())
            except ValidationError:
                assert not (perms_ok and sites_ok), (perms, site_idx)
            else:
                assert perms_ok, perms
                assert sites_ok, site_idx
                # and what it grants is what was asked
                guest = mkuser(f"g-{code.lookup_id}")
                m = services.do_redeem_access_code(guest, text, None)
                assert set(m.permissions) == perms
                assert {s.pk for s in m.sites.all()} == {s.pk for s in chosen}
            transaction.set_rollback(True)

    check()


def test_daily_prune_task_is_scheduled_and_prunes(world):
    from django.utils import timezone as tz
    from fleetroom.tenancy.tasks import prune_lockout_counters
    from huey.contrib.djhuey import HUEY

    assert "fleetroom.tenancy.tasks.prune_lockout_counters" in HUEY._registry._registry
    with pytest.raises(ValidationError):
        services.do_redeem_access_code(mkuser("q"), "bad", IP)
    daily = prune_lockout_counters.task_class().validate_datetime
    assert daily(tz.now().replace(hour=3, minute=41)) is True
    assert daily(tz.now().replace(hour=3, minute=42)) is False
    assert prune_lockout_counters.call_local() == 0  # fresh failures are kept

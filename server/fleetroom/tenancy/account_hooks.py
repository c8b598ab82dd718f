"""What tenancy tells the accounts app's policy hooks (:mod:`fleetroom.accounts.policy`).

* **MFA required** for anyone with a live membership on an operator or dealer
  node: they see many customers' fleets, so one phished password costs most.
* **Who may administer an account** (unlock, deactivate, reactivate): someone who
  could grant *every* live membership the target holds (``manage_users`` and the
  membership's permissions on all it covers).  "Covers all" rather than "covers
  one", so a customer administrator cannot lock a dealer's technician out of the
  whole platform just because that technician also has access to the customer.
* **Password context words**: the names of the dealers and customers a user
  belongs to (a password containing the employer's name is guessable).
* **Idle limit per role** (``[security] deactivate_after_days_by_role``): each
  live built-in role counts with its configured limit (or the default); the
  shortest applies, so a second, more sensitive role never extends the first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from fleetroom.core.scoping import membership_permissions
from fleetroom.tenancy.models import Tenant, TenantKind
from fleetroom.tenancy.permissions import Permission
from fleetroom.tenancy.selectors import live_memberships

_WIDE_KINDS = {TenantKind.OPERATOR, TenantKind.DEALER}


def requires_mfa(user: Any) -> bool:
    """True when the user holds a live membership on an operator or dealer node."""
    return live_memberships(user).filter(tenant__kind__in=_WIDE_KINDS).exists()


def may_administer(acting_user: Any, target: Any) -> bool:
    """True when ``acting_user`` could grant every live membership ``target`` holds."""
    from fleetroom.tenancy.services import check_grantable

    memberships = list(live_memberships(target).prefetch_related("sites"))
    if not memberships:
        return False
    for m in memberships:
        sites = list(m.sites.all()) if m.site_restricted else None
        try:
            check_grantable(acting_user, Permission.MANAGE_USERS, m.tenant,
                            membership_permissions(m), sites)
        except ValidationError:
            return False
    return True


def context_words(user: Any) -> list[str]:
    """Names of the customers and dealers above the user's memberships."""
    ids: set[int] = set()
    for m in live_memberships(user):
        ids.update(m.tenant.ancestor_ids)
        ids.add(m.tenant.pk)
    return list(Tenant.objects.filter(pk__in=ids, kind__in=[TenantKind.DEALER,
                                                             TenantKind.CUSTOMER])
                .values_list("name", flat=True))


def idle_limit(user: Any) -> timedelta | None:
    """The shortest idle limit of the user's live built-in roles; None without any
    per-role setting or membership (the default limit applies)."""
    security = settings.CONFIG.security
    by_role = security.deactivate_after_days_by_role
    if not by_role:
        return None
    roles = set(live_memberships(user).exclude(role="").values_list("role", flat=True))
    if not roles:
        return None
    return timedelta(days=min(by_role.get(r, security.deactivate_after_days) for r in roles))


def register() -> bool:
    """Plug into the accounts policy when that module exists; False when it does not."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("fleetroom.accounts.policy") is None:
        return False
    policy = importlib.import_module("fleetroom.accounts.policy")
    policy.register_mfa_required_check(requires_mfa)
    policy.register_account_admin_check(may_administer)
    policy.register_context_word_provider(context_words)
    policy.register_idle_limit(idle_limit)
    return True

"""Periodic account jobs (Huey; the consumer with periodic tasks enabled runs them)."""

from __future__ import annotations

from huey import crontab
from huey.contrib.djhuey import db_periodic_task

from fleetroom.accounts import services


@db_periodic_task(crontab(hour="3", minute="17"))  # type: ignore[untyped-decorator]
def deactivate_idle_users() -> list[int]:
    """Daily: deactivate accounts unused for longer than their idle limit
    (``[security] deactivate_after_days``, 90 by default).  Off the hour, so many
    installations do not all hit a shared database at 03:00 sharp."""
    return services.deactivate_idle_users()


# --- SSO (fleetroom/accounts/sso) ----------------------------------------------------------

@db_periodic_task(crontab(minute="41"))  # type: ignore[untyped-decorator]
def sync_ldap_directory() -> list[int]:
    """Hourly: re-read every directory user, so someone removed from a mapped group or
    from the directory loses that access without waiting for a login that will
    never come.  Does nothing when ``[sso.ldap]`` is not configured."""
    from fleetroom.accounts.sso import services as sso_services

    return sso_services.sync_ldap_directory().gone

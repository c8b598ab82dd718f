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

"""Periodic tenancy jobs (Huey)."""

from __future__ import annotations

from huey import crontab
from huey.contrib.djhuey import db_periodic_task

from fleetroom.tenancy import lockout


@db_periodic_task(crontab(hour="3", minute="41"))  # type: ignore[untyped-decorator]
def prune_lockout_counters() -> int:
    """Daily: drop access-code and TOTP failure counters that no longer lock anything,
    so the table holds only live counters (it is read on every redemption)."""
    return lockout.prune()

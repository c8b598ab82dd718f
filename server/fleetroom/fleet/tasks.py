"""Periodic work of the fleet app (Huey; one consumer runs periodic tasks)."""

from __future__ import annotations

from typing import Any

from huey import crontab
from huey.contrib.djhuey import db_periodic_task

from . import services


@db_periodic_task(crontab(minute="17"))  # type: ignore[untyped-decorator]
def rollup_and_prune() -> dict[str, Any]:
    """Hourly: daily counter rollups, then pruning of raw readings past retention.

    Bounded per run (see :func:`services.do_rollup_and_prune`), so a backlog is
    worked off over several runs instead of one long transaction.
    """
    report = services.do_rollup_and_prune()
    return {"days": [d.isoformat() for d in report.days_rolled], "rows": report.rollup_rows,
            "pruned": report.readings_pruned, "finished": report.finished}


@db_periodic_task(crontab(minute="*/10"))  # type: ignore[untyped-decorator]
def mark_not_reporting() -> int:
    """Every ten minutes: devices whose readings stopped become ``not_reporting``."""
    return services.do_mark_not_reporting()

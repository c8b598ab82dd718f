"""Background work of the agents app (Huey; one consumer runs the periodic tasks).

* :func:`process_batch` — queued after the commit that stored a batch.
* :func:`sweep_pending_batches` — every two minutes, batches whose queued task
  was lost (the worker died, the queue was reset): nothing acknowledged is left
  unprocessed for long.
* :func:`flag_silent_agents` — every five minutes: agents not heard from for
  three status-poll intervals (at least 15 minutes) are flagged as not reporting.
* :func:`prune_received` — daily: old raw batches and item keys.
* :func:`publish_profiles_daily` — a signed profile bundle when the shipped
  profiles changed or the newest is a week old.
"""

from __future__ import annotations

from typing import Any

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from . import processing, services


@db_task(retries=4, retry_delay=15)  # type: ignore[untyped-decorator]
def process_batch(batch_id: int) -> dict[str, Any] | None:
    """Normalise one received batch (idempotent; retried on errors)."""
    report = processing.do_process_batch(batch_id)
    if report is None:
        return None
    return {"stored": report.readings_stored, "duplicates": report.readings_duplicate,
            "gaps": report.gaps, "results": report.results, "problems": len(report.problems)}


@db_periodic_task(crontab(minute="*/2"))  # type: ignore[untyped-decorator]
def sweep_pending_batches() -> int:
    """Batches older than a minute that are still unprocessed."""
    return processing.do_process_pending()


@db_periodic_task(crontab(minute="*/5"))  # type: ignore[untyped-decorator]
def flag_silent_agents() -> int:
    """Agents past their ``silent_after`` become "not reporting" (one alert each)."""
    return services.do_flag_silent_agents()


@db_periodic_task(crontab(hour="4", minute="23"))  # type: ignore[untyped-decorator]
def prune_received() -> list[int]:
    """Raw batches past ``raw_retention_days``, item keys past ``item_retention_days``."""
    return list(processing.do_prune_received())


REPUBLISH_AFTER_DAYS = 7
"""A bundle lives 30 days; a fresh one each week keeps every agent weeks from expiry."""


@db_periodic_task(crontab(hour="2", minute="41"))  # type: ignore[untyped-decorator]
def publish_profiles_daily() -> int | None:
    """Publish a signed profile bundle when the shipped profiles changed (a server
    upgrade) or the newest bundle is a week old; agents check daily.

    Returns the new version, or ``None`` when the newest bundle is still current.
    """
    return do_publish_profiles_if_due()


def do_publish_profiles_if_due(now: float | None = None) -> int | None:
    """The decision and the publish (separate from the Huey wrapper for tests)."""
    import hashlib
    import time

    from fleetroom_profiles import shipped_profile_dir
    from fleetroom_profiles.bundle import files_from_directory

    from .bundles import bundle_dir, latest_bundle, publish
    from .keys import server_keys

    files = files_from_directory(shipped_profile_dir())
    digest = hashlib.sha256(b"".join(
        name.encode() + b"\0" + hashlib.sha256(data).digest()
        for name, data in sorted(files.items()))).hexdigest()
    marker = bundle_dir() / "source.sha256"
    latest = latest_bundle()
    age_days = ((now or time.time()) - latest.path.stat().st_mtime) / 86400 if latest else None
    recorded = marker.read_text().strip() if marker.is_file() else ""
    if latest is not None and recorded == digest and age_days is not None \
            and age_days < REPUBLISH_AFTER_DAYS:
        return None
    stored = publish(server_keys().signing_key)
    marker.write_text(digest + "\n")
    return stored.version

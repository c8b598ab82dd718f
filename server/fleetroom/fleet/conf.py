"""The fleet app's tunables, read from Django settings with safe defaults.

The values come from :mod:`fleetroom.config` (``[fleet]`` section, strictly
parsed like everything else) through settings; the defaults here apply only when
the settings module does not set them (a bare test configuration).
"""

from __future__ import annotations

from django.conf import settings


def raw_retention_days() -> int:
    """Days raw readings (header, counters, supplies, payload) are kept; rollups stay."""
    return int(getattr(settings, "FLEETROOM_FLEET_RAW_RETENTION_DAYS", 90))


def not_reporting_after_hours() -> int:
    """A device whose newest reading is older than this is ``not_reporting``."""
    return int(getattr(settings, "FLEETROOM_FLEET_NOT_REPORTING_HOURS", 24))


def max_future_skew_seconds() -> int:
    """How far in the future a reading's ``taken_at`` may lie (agent clock drift).

    A reading from next year would otherwise become the device's "newest" and
    freeze its current state until then.
    """
    return int(getattr(settings, "FLEETROOM_FLEET_MAX_FUTURE_SKEW_SECONDS", 3600))

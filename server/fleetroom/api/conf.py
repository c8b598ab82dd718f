"""The API app's tunables, read from Django settings with safe defaults.

The values come from :mod:`fleetroom.config` (the ``[api]`` section, strictly
parsed) through settings; the defaults here apply only to a bare test configuration.
"""

from __future__ import annotations

from django.conf import settings


def token_default_days() -> int:
    """Lifetime of a new token when its creator names none (90 days).

    Long enough for a monthly script, short enough that a forgotten token dies on
    its own; the same 90 days after which idle accounts are deactivated.
    """
    return min(int(getattr(settings, "FLEETROOM_API_TOKEN_DEFAULT_DAYS", 90)),
               token_max_days())


def token_max_days() -> int:
    """The longest lifetime anyone may give a token (365 days by default).

    There is no "never expires": a token that outlives everyone's memory of it is
    the one that leaks from an old backup.
    """
    return max(1, int(getattr(settings, "FLEETROOM_API_TOKEN_MAX_DAYS", 365)))


def max_tokens_per_user() -> int:
    """How many live tokens one person may hold (a runaway script cannot mint thousands)."""
    return max(1, int(getattr(settings, "FLEETROOM_API_MAX_TOKENS_PER_USER", 50)))


def request_rate() -> str:
    """Requests per user with a token (``count/period``; shared by all of a user's tokens)."""
    return str(getattr(settings, "FLEETROOM_API_RATE", "600/m"))


def token_issue_rate() -> str:
    """Token-issuance attempts per client address; the per-name lockout comes on top."""
    return str(getattr(settings, "FLEETROOM_API_TOKEN_ISSUE_RATE", "20/m"))


def last_used_resolution_seconds() -> int:
    """``last_used_at`` is written at most this often per token.

    Writing it on every request would turn each read into a write (and on SQLite
    take the database write lock); a minute's precision is all a person needs to
    tell a token in use from a forgotten one.
    """
    return int(getattr(settings, "FLEETROOM_API_LAST_USED_RESOLUTION_SECONDS", 60))

"""Fixed-window counters for agent traffic.

The same technique as the API's throttle (:mod:`fleetroom.api.throttling`): one
counter per subject and window.  A fixed window admits up to twice the rate across
a window boundary, which is fine for its purpose — keeping one agent, tenant or
address from taking the server away from the rest.  Every process (web workers,
the MQTT bridge, the mail intake) counts in the same place, so they count together.

Two stores, for two kinds of traffic:

* **Requests of an agent and of its tenant** (``agent`` and ``tenant`` scopes,
  :data:`DB_SCOPES`) are counted in :class:`~.models.RateCounter` rows.  Every
  accepted request counts, and :func:`count` runs *inside* the transaction that
  stores the request (:func:`fleetroom.agents.receive.receive_envelope`).  Why not
  the cache: with the database cache a counter update is a write transaction of its
  own (``add``, then ``incr``: two per counter, four per request), and on SQLite each
  one queues for the single write lock behind the normalisation worker — measured,
  over half of an upload's time during a drain.  Inside the storing transaction the
  lock is held already; on PostgreSQL the counter rows are updated as the last
  statements, so a tenant's row stays locked only until that commit.  The request
  is checked (read only, :func:`blocked`) before any heavy work, and counted when it
  is stored; a request over the limit is rolled back and refused, so a burst still
  gets 429 + Retry-After however its requests interleave.
* **Everything else** — unauthenticated failures per source address, refused
  enrollments — uses the shared cache (database table or Redis, see settings):
  those are rare, happen outside any transaction, and must never touch an
  agent's rows.
"""

from __future__ import annotations

from typing import Final

from django.core.cache import cache
from django.db import connection

from .conf import now_ts, parse_rate, retry_after
from .models import RateCounter

_PREFIX = "fleetroom:agents:rl"

DB_SCOPES: Final = frozenset({"agent", "tenant"})
"""Scopes counted in :class:`~.models.RateCounter` rows (see the module doc)."""

_SUBJECT_MAX: Final = 128


def _key(scope: str, subject: str, window: int) -> str:
    # Cache keys must stay short and printable (memcached rules, which Django checks).
    return f"{_PREFIX}:{scope}:{subject[:120]}:{window}"


def _upsert_sql() -> str:
    """One statement: this window's count + 1, or 1 in a new window; the new count.

    ``INSERT … ON CONFLICT … DO UPDATE … RETURNING`` (SQLite ≥ 3.35, PostgreSQL): a
    single row write, no read-modify-write race between processes."""
    q = connection.ops.quote_name
    table = q(RateCounter._meta.db_table)
    # The model sets no db_column: the columns are the field names.
    scope, subject, window, hits = (q(n) for n in ("scope", "subject", "window_no", "hits"))
    return (f"INSERT INTO {table} ({scope}, {subject}, {window}, {hits}) "  # noqa: S608
            f"VALUES (%s, %s, %s, 1) ON CONFLICT ({scope}, {subject}) DO UPDATE SET "
            f"{hits} = CASE WHEN {table}.{window} = EXCLUDED.{window} "
            f"THEN {table}.{hits} + 1 ELSE 1 END, {window} = EXCLUDED.{window} "
            f"RETURNING {hits}")


def count(scope: str, subject: str, rate: str) -> float | None:
    """Count one request of ``subject`` in a :data:`DB_SCOPES` scope; the seconds to
    wait when that went over ``rate``, else ``None``.

    Runs in the caller's transaction when there is one (rolled back with it), else
    as a statement of its own.
    """
    if scope not in DB_SCOPES:
        raise ValueError(f"{scope!r} is not counted in the database")
    limit, period = parse_rate(rate)
    now = now_ts()
    window = int(now // period)
    with connection.cursor() as cur:
        cur.execute(_upsert_sql(), [scope, subject[:_SUBJECT_MAX], window])
        row = cur.fetchone()
    if row is not None and int(row[0]) > limit:
        return retry_after((window + 1) * period - now)
    return None


def hit(scope: str, subject: str, rate: str) -> float | None:
    """Count one event; the seconds to wait when that went over ``rate``, else ``None``."""
    if scope in DB_SCOPES:
        return count(scope, subject, rate)
    limit, period = parse_rate(rate)
    now = now_ts()
    window = int(now // period)
    key = _key(scope, subject, window)
    cache.add(key, 0, timeout=period + 1)
    try:
        n = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=period + 1)
        n = 1
    if n > limit:
        return retry_after((window + 1) * period - now)
    return None


def blocked(scope: str, subject: str, rate: str) -> float | None:
    """Seconds to wait when ``subject`` has already used up ``rate`` (counts nothing)."""
    limit, period = parse_rate(rate)
    now = now_ts()
    window = int(now // period)
    n: object
    if scope in DB_SCOPES:
        n = (RateCounter.objects.filter(scope=scope, subject=subject[:_SUBJECT_MAX],
                                        window_no=window)
             .values_list("hits", flat=True).first()) or 0
    else:
        n = cache.get(_key(scope, subject, window), 0)
    if isinstance(n, int) and n >= limit:
        return retry_after((window + 1) * period - now)
    return None

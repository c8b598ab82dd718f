"""Fixed-window counters in the shared cache, for agent traffic.

The same technique as the API's throttle (:mod:`fleetroom.api.throttling`): one
cache key per subject and window, ``add`` then ``incr``.  A fixed window admits up
to twice the rate across a window boundary, which is fine for its purpose —
keeping one agent, tenant or address from taking the server away from the rest.
The cache is shared by every process (database table or Redis, see settings), so
all web workers, the MQTT bridge and the mail intake count together.
"""

from __future__ import annotations

from django.core.cache import cache

from .conf import now_ts, parse_rate, retry_after

_PREFIX = "fleetroom:agents:rl"


def _key(scope: str, subject: str, window: int) -> str:
    # Cache keys must stay short and printable (memcached rules, which Django checks).
    return f"{_PREFIX}:{scope}:{subject[:120]}:{window}"


def hit(scope: str, subject: str, rate: str) -> float | None:
    """Count one event; the seconds to wait when that went over ``rate``, else ``None``."""
    limit, period = parse_rate(rate)
    now = now_ts()
    window = int(now // period)
    key = _key(scope, subject, window)
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=period + 1)
        count = 1
    if count > limit:
        return retry_after((window + 1) * period - now)
    return None


def blocked(scope: str, subject: str, rate: str) -> float | None:
    """Seconds to wait when ``subject`` has already used up ``rate`` (counts nothing)."""
    limit, period = parse_rate(rate)
    now = now_ts()
    window = int(now // period)
    count = cache.get(_key(scope, subject, window), 0)
    if isinstance(count, int) and count >= limit:
        return retry_after((window + 1) * period - now)
    return None

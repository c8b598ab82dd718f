"""Request rate limits for the API (answered with 429 and ``Retry-After``).

Our own small throttle instead of ninja's ``SimpleRateThrottle`` for three reasons:
the rate is read from settings on every request (so it can be configured, and
tests can change it), the client address comes from
:func:`fleetroom.core.audit.client_ip` (which trusts ``X-Forwarded-For`` only when
``[security] trusted_proxies`` says so — ninja's default would let any client pick
its own address), and no per-request state is kept on the shared throttle object,
which ninja's classes do and which races between threads.

Counting is a fixed window per key with ``cache.add`` + ``cache.incr`` (atomic on
the locmem, database and Redis caches).  A fixed window admits up to twice the
rate across a window boundary; for keeping one script from hogging the server
that is close enough, and it costs one cache round trip.  With the default
per-process locmem cache each web worker counts on its own; configure a shared
cache (``CACHES``) to count across workers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from django.core.cache import cache
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from fleetroom.core.audit import client_ip

_PERIODS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400,
            "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"600/m"`` → ``(600, 60)``; ``"20/5m"`` → ``(20, 300)``.  Raises ``ValueError``."""
    count_text, _, period_text = rate.partition("/")
    count = int(count_text)
    for unit in sorted(_PERIODS, key=len, reverse=True):
        if period_text.endswith(unit):
            multiple = period_text[: -len(unit)]
            seconds = (int(multiple) if multiple else 1) * _PERIODS[unit]
            break
    else:
        seconds = int(period_text)
    if count < 1 or seconds < 1:
        raise ValueError(f"invalid rate {rate!r}")
    return count, seconds


def by_user_or_address(request: HttpRequest) -> str:
    """The authenticated user (all their tokens share one budget), else the client address."""
    auth = getattr(request, "auth", None)
    user_id = getattr(auth, "user_id", None)
    if user_id is not None:
        return f"user:{user_id}"
    return f"ip:{client_ip(request) or '-'}"


def by_address(request: HttpRequest) -> str:
    """The client address (for requests made before anyone is authenticated)."""
    return f"ip:{client_ip(request) or '-'}"


class RateLimit(BaseThrottle):
    """At most ``rate()`` requests per window and key; ``wait()`` gives Retry-After."""

    def __init__(self, scope: str, rate: Callable[[], str],
                 ident: Callable[[HttpRequest], str]) -> None:
        self.scope = scope
        self.rate = rate
        self.ident = ident
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        """Count this request; ``False`` when the window's budget is spent."""
        count, seconds = parse_rate(self.rate())
        now = time.time()
        window = int(now // seconds)
        key = f"fleetroom:api:rate:{self.scope}:{self.ident(request)}:{seconds}:{window}"
        cache.add(key, 0, timeout=seconds + 1)
        try:
            used = cache.incr(key)
        except ValueError:  # evicted between add and incr: start again
            cache.set(key, 1, timeout=seconds + 1)
            used = 1
        self._local.wait = (window + 1) * seconds - now
        return bool(used <= count)

    def wait(self) -> float | None:
        """Seconds until the current window ends (when the next request is allowed)."""
        value: float | None = getattr(self._local, "wait", None)
        return None if value is None else max(1.0, math.ceil(value))

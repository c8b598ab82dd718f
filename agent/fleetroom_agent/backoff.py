"""Exponential back-off with full jitter, and Retry-After as a floor.

Why full jitter (delay drawn uniformly from ``[0, min(cap, base * 2**n)]``): after
an outage a thousand agents configured alike would otherwise retry in lock-step
and knock the server over again the moment it comes back; spreading the retries
over the whole window is what AWS measured to finish the backlog fastest with
the fewest wasted calls.  The server's ``Retry-After`` is never shortened: it is
the lower bound of the wait, jitter only ever adds to it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

DEFAULT_BASE_S: Final = 1.0
DEFAULT_CAP_S: Final = 300.0


@dataclass(slots=True)
class Backoff:
    """Delay for the ``n``-th consecutive failure (``n`` ≥ 1)."""

    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            msg = "back-off needs 0 < base_s <= cap_s"
            raise ValueError(msg)

    def ceiling(self, failures: int) -> float:
        """The upper end of the window after ``failures`` consecutive failures."""
        if failures <= 0:
            return 0.0
        # 2**n grows past any cap quickly; clamp the exponent to avoid huge ints.
        return min(self.cap_s, self.base_s * 2.0 ** min(failures, 62))

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait: full jitter, but never less than ``retry_after``."""
        wait = self.rng.uniform(0.0, self.ceiling(failures))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

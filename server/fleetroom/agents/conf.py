"""The agents app's tunables (``[agents]`` in the configuration), with why each default.

* ``max_envelope_bytes`` 16 MiB / ``max_body_bytes`` 64 MiB — the protocol's own
  caps.  A full batch (5,000 readings of a few KiB) is ~25 MiB of JSON and a few MiB
  gzipped; anything bigger is refused before it is read (413), and a gzip bomb
  stops inflating at the body cap.
* ``agent_rate`` 120/min — an agent sends a batch or a poll every few seconds at
  most, even while draining a 72-hour backlog; a runaway or hostile agent gets 429.
* ``tenant_rate`` 6000/min — the same for all agents of one site or customer
  together, so one tenant cannot take the whole ingest away from the others.
* ``source_failure_rate`` 30/min — unauthenticated failures (bad signature,
  unknown agent, malformed envelope) per source address; after that the source
  gets 429 before anything is parsed.  These never count against an agent.
* ``enroll_failure_rate`` 20/h — refused enrollment attempts per address.
* ``max_backlog_batches`` 5000 — when normalisation falls this far behind, new
  batches get 503 + Retry-After (agents keep their data and retry) instead of
  growing an unbounded queue.  Polls still pass.
* ``token_default_hours`` 24, ``token_max_days`` 90 — enrollment token lifetime.
* ``raw_retention_days`` 14 — processed raw batches are kept this long for
  re-normalisation and forensics; ``item_retention_days`` 180 — item keys (the
  duplicate filter) this long, far beyond any agent's retry horizon.
* ``command_redeliver_seconds`` 600 — a delivered command without a result is sent
  again after this long (the reply carrying it may have been lost; agents run each
  command id once).
"""

from __future__ import annotations

import math
import time

from django.conf import settings

from fleetroom.config import AgentsConfig

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

SUSPEND_AFTER_VIOLATIONS = 5
"""Validly signed requests that break policy before the agent is suspended (issue 4)."""


def config() -> AgentsConfig:
    """The ``[agents]`` section (defaults when the settings module has none)."""
    cfg = getattr(settings, "FLEETROOM_AGENTS", None)
    return cfg if isinstance(cfg, AgentsConfig) else AgentsConfig()


def parse_rate(rate: str) -> tuple[int, int]:
    """``"120/m"`` → ``(120, 60)``."""
    count, _, unit = rate.partition("/")
    return int(count), _PERIODS[unit]


def retry_after(seconds: float) -> float:
    """A Retry-After value: whole seconds, at least one."""
    return float(max(1, math.ceil(seconds)))


def now_ts() -> float:
    """Wall clock for rate windows (a function so tests can reason about windows)."""
    return time.time()

"""Version 1 of the API: every route below ``/api/v1/``.

A new major version gets its own package beside this one, so clients on v1 keep
working while they move.
"""

from __future__ import annotations

from ninja import Router

from .agents import router as agents_router
from .alerts import router as alerts_router
from .devices import router as devices_router
from .sites import router as sites_router
from .tokens import router as tokens_router

router = Router()
for _part in (tokens_router, devices_router, alerts_router, sites_router, agents_router):
    router.add_router("", _part)

"""``limit``/``offset`` paging with the total count, for every list of the API.

Offset paging rather than cursors because the lists are what people page through
(devices, sites, a device's readings) and a total is what they ask for first; the
bounds in :class:`~fleetroom.api.schemas.PageParams` keep a single request cheap.
"""

from __future__ import annotations

from typing import TypeVar

from django.db import models

from .schemas import PageParams

_M = TypeVar("_M", bound=models.Model)


def paginate(qs: models.QuerySet[_M], params: PageParams) -> tuple[int, list[_M]]:
    """``(total, rows of this page)``; ``qs`` must already be ordered (stable pages)."""
    total = qs.count()
    if params.offset >= total:
        return total, []
    return total, list(qs[params.offset:params.offset + params.limit])

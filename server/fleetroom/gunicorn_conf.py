"""Gunicorn settings that ``fleetroom serve`` always loads (``--config python:…``).

Only what command-line flags cannot say: the TLS floor.  Gunicorn's own
``--ssl-version`` is deprecated; its ``ssl_context`` hook is the supported way.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any


def ssl_context(conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext],
                ) -> ssl.SSLContext:
    """Gunicorn's default context, refusing anything older than TLS 1.2."""
    ctx = default_ssl_context_factory()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx

"""The API object: version 1 under ``/api/v1/``, OpenAPI and Swagger UI beside it.

Every operation needs a bearer token unless it says otherwise (only token
issuance does), and every operation is rate-limited per user.  Errors are JSON of
one shape (:mod:`.errors`).

The docs page is ninja's own Swagger template: it loads Swagger UI and its
initialisation code from static files and passes its settings in a
``<script type="application/json">`` data block, so it runs under our CSP
(``script-src 'self'``) without an inline script — checked by the tests.
"""

from __future__ import annotations

from django.views.decorators.http import require_safe
from ninja import NinjaAPI

from . import conf, errors
from .auth import bearer
from .throttling import RateLimit, by_user_or_address
from .v1 import router as v1_router

DESCRIPTION = """\
Read your printer fleet: devices, their readings (counters and supplies), alerts,
and the tenant nodes (dealers, customers, sites, locations) you have access to.
Manage the collection agents: enrollment tokens (shown once), agents' state,
schedules and commands, suspension, revocation and re-enrollment.

**Authentication.** Create a token with `POST /api/v1/tokens` (your login, password
and — if your account uses two-factor authentication — a current code) or on the
API tokens page of the web interface, then send it as
`Authorization: Bearer <token>`.  A token acts exactly as you: it sees what your
memberships let you see, and stops working when it expires, when you revoke it,
change your password or your account is deactivated.

**Lists** take `limit` (1–500, default 50) and `offset`, and return `count`, the
total over all pages.  **Errors** are JSON: `{"detail": "…", "code": "…"}` (plus
`errors` for 422).  Objects outside your access answer 404, exactly like objects
that do not exist.
"""

api = NinjaAPI(
    title="Fleetroom API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    auth=bearer,
    throttle=[RateLimit("user", conf.request_rate, by_user_or_address)],
    docs_url="/docs",
    openapi_url="/openapi.json",
    docs_decorator=require_safe,  # GET and HEAD only, like every other read
)
errors.install(api)
api.add_router("/v1", v1_router)

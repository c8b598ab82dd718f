"""schemathesis against the API's own OpenAPI spec, through the WSGI application, with a
valid token and seeded data: every generated request (valid and invalid) must get an
answer the spec promises — status, content type, headers and body schema — and never a
server error (all of schemathesis' checks, including the ones that resend a request
without its token or with an unsupported method).

Each generated valid request is sent twice: as generated (its ids mostly name nothing,
which exercises the 404 paths) and with the path ids replaced by objects the token's
user may see, so real devices, readings and sites are validated against the schema too.

The schema is loaded when the module is imported (schemathesis' lazy
``from_fixture`` loader relies on a pytest internal that pytest 9 removed); loading
it needs no database.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from server.tests.test_api_support import build_world, issue

pytestmark = pytest.mark.django_db

APP = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP)
_CURRENT: dict[str, str] = {}
"""The token of the running test (set by the ``seeded`` fixture)."""


@schema.auth(refresh_interval=None)
class BearerToken:
    """Give schemathesis the test's token, so it sends it on every request except those
    that test a missing or broken ``Authorization`` header on purpose."""

    def get(self, case, context):
        return _CURRENT.get("token", "")

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def seeded(settings):
    """The world, a customer admin's token, and the path ids of objects it may see.

    Rate limits are raised so the run is not throttled (throttling has its own tests),
    and the WSGI handler is kept from closing the test's database connection between
    requests — Django's own test client disconnects the same receiver for that reason.
    """
    settings.FLEETROOM_API_RATE = "100000/m"
    settings.FLEETROOM_API_TOKEN_ISSUE_RATE = "100000/m"
    cache.clear()
    world = build_world()
    user = world.users["c1_admin"]
    token = issue(user, name="schemathesis")
    decoy = issue(user, name="decoy to revoke")
    pinned = {"device_id": world.devices["s11"], "site_id": world.tenants["s11"].pk,
              "key_id": decoy.split("_")[1]}
    _CURRENT["token"] = token
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield pinned
    _CURRENT.clear()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(deadline=None, max_examples=40, suppress_health_check=list(HealthCheck))
def test_api_answers_as_its_schema_promises(case, seeded):
    pinned = seeded
    case.call_and_validate()
    meta = case.meta
    if case.path_parameters and meta is not None and meta.generation.mode.is_positive:
        case.path_parameters = {name: pinned.get(name, value)
                                for name, value in case.path_parameters.items()}
        case.call_and_validate()

"""schemathesis over the agents endpoints, as someone who manages agents, with real
enrolled agents behind the ids.

The project-wide run (``test_api_schemathesis.py``) acts as a customer administrator,
who may see agents but not change them, so every change there ends in 403 or 404.
Here the token belongs to Dealer A's technician, and the path ids are replaced by a
real agent and a real token, so the answers of the changes themselves (201 with a
token, a new schedule, 409 for a revoked agent …) are checked against the schema too.

One check is left out: ``positive_data_acceptance`` (every request the schema admits
is accepted).  Some refusals depend on data no schema can express — a CIDR with host
bits set, a tenant that is a dealer rather than a site, an agent revoked by the
previous example — and answer 422 or 409 with their reason, as the operations
document; those are tested one by one in ``test_agents_api.py``.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from fleetroom.agents.services import do_create_enrollment_token
from fleetroom.core.scoping import SYSTEM
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server.tests.test_agents_ui_support import build_world
from server.tests.test_api_support import issue

pytestmark = pytest.mark.django_db

APP = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP).include(tag="agents")
_CURRENT: dict[str, str] = {}


@schema.auth(refresh_interval=None)
class BearerToken:
    """The technician's token on every request except those testing a missing one."""

    def get(self, case, context):
        return _CURRENT.get("token", "")

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def seeded(settings):
    """Agents that reported their state, a technician's token, and the ids to pin."""
    settings.FLEETROOM_API_RATE = "100000/m"
    cache.clear()
    world = build_world()
    _CURRENT["token"] = issue(world.user("tech"), name="schemathesis")
    token = do_create_enrollment_token(world.t["berlin"], acting_user=SYSTEM)[0]
    pinned = {"agent_id": world.agent("child").public_id, "token_id": token.pk}
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield pinned
    _CURRENT.clear()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(deadline=None, max_examples=25, suppress_health_check=list(HealthCheck))
def test_agents_api_answers_as_its_schema_promises(case, seeded):
    checks = {"excluded_checks": [positive_data_acceptance]}
    case.call_and_validate(**checks)
    meta = case.meta
    if case.path_parameters and meta is not None and meta.generation.mode.is_positive:
        case.path_parameters = {name: seeded.get(name, value)
                                for name, value in case.path_parameters.items()}
        case.call_and_validate(**checks)

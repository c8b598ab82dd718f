"""One real server stack for the end-to-end tests of this directory.

Starting ``fleetroom serve`` (migrations, static files, gunicorn, the Huey worker,
the MQTT bridge, the mail intake) costs far more than any single test, so the
tests share one (:func:`tests.support.e2e_stack.running_stack`): a private
Mosquitto with TLS, then the server configured for it and for its SMTP receiver.
Tests stay independent by working in their own tenant (one site each, made here)
with their own agents and their own simulated devices — every recording is used
by one test only, so no device identity is shared between tests.  Tests that use
the stack carry ``pytest.mark.xdist_group("e2e-stack")`` so ``pytest -n 2
--dist loadgroup`` runs them on one worker and the stack starts once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.e2e_stack import Stack, running_stack

SITES = ("https", "mqtt", "mail", "latency", "tenant-a", "tenant-b")
SECOND_DEALER = ("tenant-b",)
"""Sites under a second dealer: the isolation tests run across dealers."""


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e"), SITES,
                       second_dealer=SECOND_DEALER) as s:
        print(f"\ne2e stack (Mosquitto, fleetroom serve, sites) ready in {s.started_in_s:.1f} s")
        yield s

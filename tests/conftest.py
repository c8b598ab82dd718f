"""Fixtures for the cross-package tests: the simulator over the real recordings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator, V3User

from tests.support.recordings import recordings_dir

IN_CI = os.environ.get("CI", "").lower() == "true"

V3_USERS = [
    V3User("sha256aes", "SHA256", "fleetroom-auth-1", "AES256", "fleetroom-priv-1"),
    V3User("md5des", "MD5", "fleetroom-auth-2", "DES", "fleetroom-priv-2"),
    V3User("authonly", "SHA", "fleetroom-auth-3"),
    V3User("noauth"),
]


def need_recordings() -> None:
    """Skip (fail in CI) when ../shared is not beside the checkout."""
    if recordings_dir() is None:
        if IN_CI:
            pytest.fail("../shared/fixtures/snmprec is missing in CI")
        pytest.skip("../shared/fixtures/snmprec not found (set FLEETROOM_SHARED)")


@pytest.fixture(scope="session")
def shared_sim() -> Iterator[SnmpSimulator]:
    """snmpsim serving every real recording; community/context = file stem."""
    need_recordings()
    d = recordings_dir()
    assert d is not None
    with SnmpSimulator([d], v3_users=V3_USERS) as sim:
        yield sim

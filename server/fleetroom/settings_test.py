"""Settings for the test suite: a throw-away data directory, inline background jobs.

pytest-django imports settings before any conftest runs, so the defaults the
configuration needs are set here.  Every value can still be overridden from the
environment (CI sets FLEETROOM_DATABASE_URL for the PostgreSQL run).
"""

import os
import tempfile

os.environ.setdefault("FLEETROOM_DATA_DIR", tempfile.mkdtemp(prefix="fleetroom-test-"))
os.environ.setdefault("FLEETROOM_SECRET_KEY", "test-only-" + "k" * 60)
os.environ.setdefault("FLEETROOM_WORKER_IMMEDIATE", "true")

from fleetroom.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests only

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

# A file, not Django's default in-memory test database: the shared-cache memory
# database locks per table and fails at once ("database table is locked") instead
# of waiting on busy_timeout, so tests with concurrent threads could not run as in
# production (WAL file, BEGIN IMMEDIATE).
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405

# Tests render templates without running collectstatic first.
STORAGES = {**STORAGES, "staticfiles": {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  (WhiteNoise warns when absent)

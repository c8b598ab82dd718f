"""Installation: no default accounts, the first administrator from the command line,
and account events in the audit trail."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client
from fleetroom.accounts import audit_events
from fleetroom.accounts.models import User
from fleetroom.accounts.testing import PASSWORD, make_user, post_login

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_no_default_accounts():
    assert User.objects.count() == 0


@pytest.mark.slow
def test_createsuperuser_noinput_from_the_environment(tmp_path):
    """The documented first step of an installation, run as an operator would."""
    exe = Path(sys.executable).parent / "fleetroom"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLEETROOM_", "DJANGO_"))}
    env.update({"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": "s" * 60,
                "DJANGO_SUPERUSER_USERNAME": "root", "DJANGO_SUPERUSER_EMAIL": "root@example.com",
                "DJANGO_SUPERUSER_PASSWORD": "a long first administrator passphrase"})
    for args in (["manage", "migrate", "-v0"], ["manage", "createsuperuser", "--noinput"]):
        done = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                              timeout=240, check=False)
        assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "fleetroom.sqlite3") as db:
        rows = db.execute("SELECT username, is_superuser, password FROM accounts_user").fetchall()
    assert len(rows) == 1
    username, is_superuser, encoded = rows[0]
    assert (username, is_superuser) == ("root", 1)
    assert encoded.startswith("argon2$argon2id$")  # production settings hash with Argon2id


def test_login_events_are_audited(caplog):
    make_user("alice")
    with caplog.at_level(logging.INFO, logger="fleetroom.accounts.audit"):
        post_login(Client(), "alice", "wrong wrong wrong wrong")
        post_login(Client(), "alice", PASSWORD)
    actions = [getattr(r, "audit_action", None) for r in caplog.records]
    assert audit_events.LOGIN_FAILED in actions
    assert audit_events.LOGIN_SUCCEEDED in actions


def test_audit_rows_go_to_the_project_audit_log_when_it_exists():
    core_record = audit_events._core_record()
    if core_record is None:
        pytest.skip("fleetroom.core.audit is not installed in this tree")
    from fleetroom.core.models import AuditEvent

    alice = make_user("alice")
    post_login(Client(), "alice", PASSWORD)
    event = AuditEvent.objects.filter(action=audit_events.LOGIN_SUCCEEDED).get()
    assert event.actor_id == alice.pk
    assert event.target_id == str(alice.pk)
    assert event.tenant_id is None

"""Project-level guarantees: migrations committed, deploy checks, health, headers."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client


@pytest.mark.django_db
def test_migrations_are_committed():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)


@pytest.mark.django_db
def test_healthz_and_security_headers():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"

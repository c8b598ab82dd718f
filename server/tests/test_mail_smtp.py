"""Mail leaves through a real SMTP server (aiosmtpd on loopback): a password reset."""

from __future__ import annotations

import re
import socket

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message
from django.core import mail
from django.test import Client
from fleetroom.accounts.testing import make_user

pytestmark = pytest.mark.django_db


class _Inbox(Message):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list = []

    def handle_message(self, message) -> None:
        self.messages.append(message)


@pytest.fixture
def smtp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_password_reset_mail_is_delivered_over_smtp(settings, smtp):
    inbox, port = smtp
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "Fleetroom <noreply@fleet.test>"
    make_user("erika", email="erika@customer.test")
    response = Client().post("/accounts/password/reset/", {"email": "erika@customer.test"})
    assert response.status_code == 302
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert msg["To"] == "erika@customer.test"
    assert "noreply@fleet.test" in msg["From"]
    body = msg.get_payload(decode=True).decode() if not msg.is_multipart() else \
        msg.get_payload(0).get_payload(decode=True).decode()
    assert re.search(r"/accounts/password/reset/key/[\w-]+", body)
    assert mail.outbox == []  # the real backend was used, not the test runner's memory


def test_reset_for_an_unknown_address_sends_nothing(settings, smtp):
    inbox, port = smtp
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    response = Client().post("/accounts/password/reset/", {"email": "nobody@customer.test"})
    assert response.status_code == 302  # same answer as for a known address
    assert inbox.messages == []

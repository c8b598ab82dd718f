"""E-mail transport end to end: the agent's SmtpTransport → the intake's SMTP receiver
(aiosmtpd, STARTTLS with a trustme certificate) or IMAP polling → reassembly and
decryption → the real ``receive_envelope`` → items and readings stored.

The agent is enrolled through the real enrollment service with keys made here; the
readings it mails are built in the test, and every assertion compares what the
server stored with what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import ssl
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from fleetroom.agents import mail_intake
from fleetroom.agents.keys import server_keys
from fleetroom.agents.models import Agent, AgentStatus, ReceivedBatch, ReceivedItem
from fleetroom.agents.receive import receive_envelope
from fleetroom.agents.services import enroll
from fleetroom.config import MailIntakeConfig
from fleetroom.fleet.models import Device
from fleetroom_agent.identity import AgentIdentity
from fleetroom_agent.transports.smtp import SmtpSettings, SmtpTransport
from fleetroom_protocol import envelope as env
from fleetroom_protocol import mail
from fleetroom_protocol.keys import decode_public_key, decode_verify_key
from fleetroom_protocol.messages import AgentState, encode_batch_body
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from server.tests.test_agents_mail_imapd import ImapServer
from server.tests.test_agents_support import clear_limits, enroll_request, make_tree, new_token
from server.tests.test_api_support import T0, reading

pytestmark = pytest.mark.django_db(transaction=True)

INTAKE = "intake@fleet.test"
FROM = "agent@customer.test"


class MailAgent:
    """A really enrolled agent whose X25519 key the test holds."""

    def __init__(self, tenant) -> None:
        self.encryption = PrivateKey.generate()
        req, self.signing = enroll_request(new_token(tenant), encryption=self.encryption)
        response = enroll(req, "198.51.100.7")
        self.identity = AgentIdentity(
            agent_id=response.agent_id, server_url="https://fleet.test",
            signing_key=self.signing, encryption_key=self.encryption,
            server_verify_key=decode_verify_key(response.server_signing_key),
            server_public_key=decode_public_key(response.server_encryption_key),
            tenant=response.tenant, mail_to=INTAKE)
        self.agent_id = response.agent_id
        self.store = "a1b2c3d4e5f60718"
        self.ctr = 0
        self.seq = 0

    def batch(self, serials: list[str], *, key: SigningKey | None = None,
              compress: bool = True) -> bytes:
        items = []
        for serial in serials:
            self.seq += 1
            payload = reading(serial, T0 + timedelta(hours=self.seq), total=1000 + self.seq)
            items.append((self.store, "readings", self.seq, 0, 1_700_000_000.0,
                          payload.to_json().encode()))
        self.ctr += 1
        body = encode_batch_body(items, AgentState(hostname="pc-1", version="0.1.0"))
        return env.seal(body, signing_key=key or self.signing, sender=self.agent_id,
                        to=env.SERVER, ctr=self.ctr, kind="batch", compress=compress)

    def mails(self, envelope: bytes, *, max_mail_bytes: int = mail.DEFAULT_MAX_MAIL_BYTES,
              agent_key: PrivateKey | None = None) -> list[bytes]:
        return mail.seal_mails(envelope, agent_id=self.agent_id,
                               agent_key=agent_key or self.encryption,
                               server_key=server_keys().public_key, mail_from=FROM,
                               mail_to=INTAKE, max_mail_bytes=max_mail_bytes)


@pytest.fixture
def site():
    clear_limits()
    return make_tree()["s1"]


@pytest.fixture
def agent(site):
    return MailAgent(site)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(files["cert"]), append=True)
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _intake(**kw) -> mail_intake.MailIntake:
    args = {"server_key": server_keys().encryption_key, "receive": receive_envelope,
            "sender_keys": mail_intake.registered_key} | kw
    return mail_intake.MailIntake(**args)


def _cfg(tls_files, **kw) -> MailIntakeConfig:
    args = {"listen": f"127.0.0.1:{_port()}", "hostname": "intake.test",
            "tls_cert": tls_files["cert"], "tls_key": tls_files["key"],
            "accept_to": [INTAKE]} | kw
    return MailIntakeConfig(**args)


def _stored(agent: MailAgent) -> list[tuple[str, str, int]]:
    return sorted(ReceivedItem.objects.filter(agent__public_id=agent.agent_id)
                  .values_list("store", "stream", "seq"))


def _stored_elsewhere(agent: MailAgent) -> list[tuple[str, str, int]]:
    """:func:`_stored` from a helper thread, closing that thread's connection (else
    PostgreSQL cannot drop the test database)."""
    from django.db import connection

    try:
        return _stored(agent)
    finally:
        connection.close()


def _smtp_send(port: int, raw: bytes, ca_file: Path, *, rcpt: str = INTAKE) -> None:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=ctx)
        smtp.sendmail(FROM, [rcpt], raw)


# --- SMTP receiver, the agent's real transport ------------------------------------------


def test_agent_mails_a_batch_over_starttls_and_it_is_stored_once(agent, tls_files):
    serials = ["E1X001", "E1X002", "E1X003"]
    envelope = agent.batch(serials)
    captured: list[bytes] = []
    cfg = _cfg(tls_files)
    service = mail_intake.IntakeService(_intake(), cfg)
    original = service.handle

    async def spy(raw: bytes, source: str) -> mail_intake.Result:
        captured.append(raw)
        return await original(raw, source)

    service.handle = spy  # type: ignore[method-assign]

    async def scenario() -> None:
        await service.start()
        try:
            port = int(cfg.listen.rsplit(":", 1)[1])
            transport = SmtpTransport(SmtpSettings(
                host="127.0.0.1", port=port, mail_from=FROM, ca_file=tls_files["ca"]),
                agent.identity)
            assert await transport.exchange(envelope) is None
            # The same mail delivered a second time (a relay retrying after a lost 250).
            await asyncio.to_thread(_smtp_send, port, captured[0], tls_files["ca"])
        finally:
            await service.aclose()

    asyncio.run(scenario())
    assert _stored(agent) == [(agent.store, "readings", s) for s in (1, 2, 3)]
    batch = ReceivedBatch.objects.get(agent__public_id=agent.agent_id)
    assert (batch.transport, batch.item_count, batch.new_items) == ("mail", 3, 3)
    assert batch.source.startswith("smtp:127.0.0.1")
    assert sorted(Device.objects.filter(serial__in=serials).values_list("serial", flat=True)) \
        == serials
    assert service.intake.counters["delivered"] == 1
    assert service.intake.counters["duplicate"] == 1
    row = Agent.objects.get(public_id=agent.agent_id)
    assert (row.last_transport, row.policy_violations) == ("mail", 0)


def test_multi_mail_message_out_of_order_through_the_receiver(agent, tls_files):
    envelope = agent.batch([f"E2X{i:03d}" for i in range(40)], compress=False)
    mails = agent.mails(envelope, max_mail_bytes=mail.MIN_MAIL_BYTES)
    assert len(mails) >= 3
    cfg = _cfg(tls_files)
    service = mail_intake.IntakeService(_intake(), cfg)
    port = int(cfg.listen.rsplit(":", 1)[1])
    order = [*range(1, len(mails)), 0]

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))  # as `fleetroom mail-intake` runs
        while service.smtp is None:
            await asyncio.sleep(0.01)
        try:
            for i in order[:-1]:
                await asyncio.to_thread(_smtp_send, port, mails[i], tls_files["ca"])
            assert await asyncio.to_thread(_stored_elsewhere, agent) == []  # not before the last
            assert service.intake.pending == 1
            await asyncio.to_thread(_smtp_send, port, mails[order[-1]], tls_files["ca"])
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
        assert service.smtp is None  # closed on stop

    asyncio.run(scenario())
    assert _stored(agent) == [(agent.store, "readings", s) for s in range(1, 41)]
    assert service.intake.pending == 0


def test_receiver_requires_starttls_and_enforces_the_size_limit(agent, tls_files):
    cfg = _cfg(tls_files, max_mail_bytes=20_000)
    service = mail_intake.IntakeService(_intake(), cfg)
    port = int(cfg.listen.rsplit(":", 1)[1])
    outcomes: dict[str, object] = {}

    def plain() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo()
            outcomes["starttls_offered"] = smtp.has_extn("starttls")
            outcomes["mail"] = smtp.mail(FROM)[0]

    def big() -> None:
        try:
            _smtp_send(port, b"Subject: x\r\n\r\n" + b"a" * 30_000 + b"\r\n", tls_files["ca"])
        except smtplib.SMTPException as exc:
            outcomes["big"] = getattr(exc, "smtp_code", None)

    def stranger() -> None:
        try:
            _smtp_send(port, agent.mails(agent.batch(["E3X001"]))[0], tls_files["ca"],
                       rcpt="someone@fleet.test")
        except smtplib.SMTPRecipientsRefused as exc:
            outcomes["rcpt"] = exc.recipients["someone@fleet.test"][0]

    async def scenario() -> None:
        await service.start()
        try:
            for fn in (plain, big, stranger):
                await asyncio.to_thread(fn)
        finally:
            await service.aclose()

    asyncio.run(scenario())
    assert outcomes == {"starttls_offered": True, "mail": 530, "big": 552, "rcpt": 550}
    assert _stored(agent) == []


# --- the intake's decisions (real receive_envelope, mails made in the test) -------------


def test_same_envelope_again_stores_nothing_new_even_after_a_restart(agent):
    envelope = agent.batch(["E4X001", "E4X002"])
    raw = agent.mails(envelope)[0]
    first = _intake()
    assert first.handle(raw, source="smtp:192.0.2.1").verdict == "delivered"
    assert first.handle(raw, source="smtp:192.0.2.1").verdict == "duplicate"
    # A restarted intake has no memory of the message id: receive_envelope knows the bytes.
    restarted = _intake()
    again = restarted.handle(raw, source="smtp:192.0.2.1")
    assert (again.verdict, again.status) == ("duplicate", 200)
    # The same envelope re-mailed (new message id, new encryption) is the same too.
    assert restarted.handle(agent.mails(envelope)[0], source="x").verdict == "duplicate"
    assert _stored(agent) == [(agent.store, "readings", 1), (agent.store, "readings", 2)]
    assert ReceivedBatch.objects.filter(agent__public_id=agent.agent_id).count() == 1
    row = Agent.objects.get(public_id=agent.agent_id)
    assert (row.status, row.policy_violations) == (AgentStatus.ACTIVE, 0)


def test_tampered_wrong_key_and_bad_signature_are_dropped_and_counted(agent):
    intake = _intake()
    raw = agent.mails(agent.batch(["E5X001"]))[0]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = body.split(b"\r\n")
    flipped = lines[3][:10] + (b"A" if lines[3][10:11] != b"A" else b"B") + lines[3][11:]
    tampered = head + b"\r\n\r\n" + b"\r\n".join([*lines[:3], flipped, *lines[4:]])
    assert intake.handle(tampered, source="s").code == "bad-crypto"
    stranger = agent.mails(agent.batch(["E5X002"]), agent_key=PrivateKey.generate())[0]
    assert intake.handle(stranger, source="s").code == "wrong-key"
    forged = agent.mails(agent.batch(["E5X003"], key=SigningKey.generate()))[0]
    result = intake.handle(forged, source="s")
    assert (result.verdict, result.status) == ("refused", 401)
    assert intake.handle(b"Subject: hello\r\n\r\nnot for us\r\n", source="s").code \
        == "not-fleetroom"
    assert intake.counters == Counter({
        "mails": 4, "parts": 1, "refused:bad-crypto": 1, "refused:wrong-key": 1,
        "refused:status-401": 1, "refused:not-fleetroom": 1})
    assert _stored(agent) == []
    row = Agent.objects.get(public_id=agent.agent_id)
    assert (row.status, row.policy_violations) == (AgentStatus.ACTIVE, 0)


def test_missing_part_stores_nothing_and_expires(agent):
    now = [0.0]
    intake = _intake(limits=mail.Limits(ttl_s=600), clock=lambda: now[0])
    mails = agent.mails(agent.batch([f"E6X{i:03d}" for i in range(30)], compress=False),
                        max_mail_bytes=mail.MIN_MAIL_BYTES)
    for raw in mails[:-1]:
        assert intake.handle(raw, source="s").verdict == "buffered"
    now[0] = 601
    assert intake.expire() == 1
    assert intake.counters["expired"] == 1
    assert intake.pending == 0
    assert intake.handle(mails[-1], source="s").verdict == "buffered"  # alone: incomplete
    assert _stored(agent) == []


def test_busy_server_defers_the_last_part_and_the_retry_completes_it(agent):
    calls: list[int] = []

    def busy_once(data: bytes, *, transport: str, source: str):
        calls.append(len(data))
        if len(calls) == 1:
            from fleetroom.agents.receive import Outcome
            return Outcome(503, retry_after=30.0, reason="backlog")
        return receive_envelope(data, transport=transport, source=source)

    intake = _intake(receive=busy_once)
    mails = agent.mails(agent.batch([f"E7X{i:03d}" for i in range(20)], compress=False),
                        max_mail_bytes=mail.MIN_MAIL_BYTES)
    for raw in mails[:-1]:
        intake.handle(raw, source="s")
    deferred = intake.handle(mails[-1], source="s")
    assert (deferred.verdict, deferred.status) == ("deferred", 503)
    assert _stored(agent) == []
    assert intake.handle(mails[-1], source="s").verdict == "delivered"  # the MTA's retry
    assert len(_stored(agent)) == 20


def test_a_crashing_receive_defers_instead_of_losing(agent):
    def broken(data: bytes, *, transport: str, source: str):
        raise RuntimeError("database went away")

    raw = agent.mails(agent.batch(["E8X001"]))[0]
    assert _intake(receive=broken).handle(raw, source="s").verdict == "deferred"
    assert _intake().handle(raw, source="s").verdict == "delivered"
    assert _stored(agent) == [(agent.store, "readings", 1)]


# --- IMAP polling -----------------------------------------------------------------------


def test_imap_polling_delivers_deletes_and_keeps_what_it_refused(agent, tls_files, ca):
    good = agent.mails(agent.batch(["E9X001", "E9X002"]))[0]
    junk = b"From: x@y.test\r\nSubject: spam\r\n\r\nBuy now\r\n"
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    with ImapServer(user="intake", password="pw 1\"x", tls=server_tls) as imap:
        box = imap.mailboxes["INBOX"]
        with imap.lock:
            good_uid = box.append(good)
            junk_uid = box.append(junk)
            box.append(good)  # delivered twice by the provider
            box.append(b"old", flags={"\\Seen"})  # read already: not ours to touch
            box.append(good, flags={"\\Deleted"})  # deleted, not yet expunged: skipped
        cfg = MailIntakeConfig(imap_host="127.0.0.1", imap_port=imap.port,
                               imap_user="intake", imap_password="pw 1\"x",
                               imap_ca_file=tls_files["ca"], imap_mailbox="INBOX")
        service = mail_intake.IntakeService(_intake(), cfg)
        tally = mail_intake.poll_once(service)
        with imap.lock:
            left = {m.uid: (m.data, m.flags) for m in box.messages}
    assert tally == Counter({"delivered": 1, "duplicate": 1, "refused": 1})
    assert good_uid not in left
    assert left[junk_uid] == (junk, {"\\Seen"})
    assert len(left) == 2  # the junk (kept, read) and the old message; expunged the rest
    assert "UID FETCH" in imap.commands
    assert "EXPUNGE" in imap.commands
    assert _stored(agent) == [(agent.store, "readings", 1), (agent.store, "readings", 2)]


def test_imap_bad_login_is_reported(tls_files, ca):
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    with ImapServer(user="intake", password="right", tls=server_tls) as imap:
        cfg = MailIntakeConfig(imap_host="127.0.0.1", imap_port=imap.port,
                               imap_user="intake", imap_password="wrong",
                               imap_ca_file=tls_files["ca"])
        service = mail_intake.IntakeService(_intake(), cfg)
        with pytest.raises(mail_intake.ImapError, match=r"127\.0\.0\.1"):
            mail_intake.poll_once(service)


def test_cli_body_polls_once_with_the_configured_keys(agent, tls_files, ca, settings):
    """``fleetroom mail-intake --once``: the wiring from the config (server keys, the
    agents' registered keys, receive_envelope)."""
    from fleetroom import config as fconfig

    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    with ImapServer(user="intake", password="pw", tls=server_tls) as imap:
        with imap.lock:
            imap.mailboxes["INBOX"].append(agent.mails(agent.batch(["E10X01"]))[0])
        cfg = fconfig.Config(
            data_dir=Path(settings.DATA_DIR), secret_key="s" * 60,
            mail_intake=MailIntakeConfig(imap_host="127.0.0.1", imap_port=imap.port,
                                         imap_user="intake", imap_password="pw",
                                         imap_ca_file=tls_files["ca"]))
        assert mail_intake.main(lambda: cfg, lambda: None, once=True) == 0
    assert _stored(agent) == [(agent.store, "readings", 1)]
    empty = fconfig.Config(data_dir=Path(settings.DATA_DIR), secret_key="s" * 60)
    assert mail_intake.main(lambda: empty, lambda: None) == 2


def test_config_section_is_strict(tls_files):
    with pytest.raises(ValueError, match="HOST:PORT"):
        MailIntakeConfig(listen="2525")
    with pytest.raises(ValueError, match="clear text"):
        MailIntakeConfig(imap_host="imap.example.com", imap_security="none",
                         imap_user="u", imap_password="p")
    with pytest.raises(ValueError, match="imap_user"):
        MailIntakeConfig(imap_host="imap.example.com")
    assert not MailIntakeConfig().enabled
    assert MailIntakeConfig(listen="[::1]:2525").enabled


def test_enrollment_offers_the_intake_address_when_configured(site, settings):
    req, _ = enroll_request(new_token(site))
    assert enroll(req, "198.51.100.7").mail_to is None
    settings.CONFIG = settings.CONFIG.model_copy(update={
        "mail_intake": MailIntakeConfig(address="fleet-intake@fleet.test")})
    req, _ = enroll_request(new_token(site))
    assert enroll(req, "198.51.100.7").mail_to == "fleet-intake@fleet.test"


def test_cli_command_is_registered_and_says_what_is_missing(tmp_path):
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "fleetroom"
    env = {**os.environ, "FLEETROOM_DATA_DIR": str(tmp_path),
           "FLEETROOM_SECRET_KEY": "s" * 60}
    done = subprocess.run([str(exe), "mail-intake"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "set [mail_intake] listen" in done.stderr
    bad = subprocess.run([str(exe), "mail-intake"], capture_output=True, text=True,
                         timeout=120, check=False,
                         env={**env, "FLEETROOM_MAIL_INTAKE_LISTEN": "2525"})
    assert bad.returncode == 2
    assert "mail_intake.listen" in bad.stderr


def test_a_failing_key_lookup_defers_instead_of_crashing(agent):
    def lookup(agent_id: str):
        raise RuntimeError("database went away")

    raw = agent.mails(agent.batch(["E11X01"]))[0]
    result = _intake(sender_keys=lookup).handle(raw, source="s")
    assert (result.verdict, result.code) == ("deferred", "error")
    assert _stored(agent) == []


def test_the_agents_sender_and_outbox_deliver_by_mail_and_keep_the_items(
        agent, tls_files, tmp_path):
    """The real chain on the agent side: outbox → Sender → SmtpTransport.  The items are
    stored on the server, and stay in the outbox because no acknowledgement came back
    (mail is one-way; they go again after ``one_way_resend_s``)."""
    from fleetroom_agent.identity import CounterStore
    from fleetroom_agent.outbox import Outbox
    from fleetroom_agent.sender import Sender

    serials = ["E12X01", "E12X02", "E12X03"]
    outbox = Outbox(tmp_path / "outbox.sqlite", agent.agent_id)
    for i, serial in enumerate(serials):
        outbox.put("readings", reading(serial, T0 + timedelta(hours=i), total=50 + i)
                   .to_json().encode())
    cfg = _cfg(tls_files)
    service = mail_intake.IntakeService(_intake(), cfg)
    port = int(cfg.listen.rsplit(":", 1)[1])

    async def no_reply(reply) -> None:
        raise AssertionError("no reply comes back by mail")

    async def scenario() -> None:
        await service.start()
        transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, mail_from=FROM,
                                               ca_file=tls_files["ca"]), agent.identity)
        sender = Sender(agent.identity, outbox, [transport], AgentState, no_reply,
                        counter=CounterStore(tmp_path), one_way_resend_s=3600)
        task = asyncio.create_task(sender.run())
        try:
            for _ in range(300):
                if service.intake.counters["delivered"]:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sender.aclose()
            await service.aclose()

    asyncio.run(scenario())
    assert _stored(agent) == [(outbox.store_id, "readings", s) for s in (1, 2, 3)]
    assert sorted(Device.objects.filter(serial__in=serials).values_list("serial", flat=True)) \
        == serials
    assert outbox.stats().total_items == 3  # kept until an acknowledgement arrives
    outbox.close()

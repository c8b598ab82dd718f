"""Sealed mail: encryption, chunking, reassembly limits and hostile MIME."""

from __future__ import annotations

import base64
import email
import email.policy
import os
from email.message import EmailMessage

import pytest
from fleetroom_protocol import envelope as env
from fleetroom_protocol import mail
from fleetroom_protocol.keys import key_id
from nacl.public import PrivateKey
from nacl.signing import SigningKey

AGENT_ID = "7d1c2a52-3b7e-4a0e-9a52-0c9f3c1e2f11"
AGENT_SIGN = SigningKey.generate()
AGENT_BOX = PrivateKey.generate()
SERVER_BOX = PrivateKey.generate()
SMALL = mail.MIN_MAIL_BYTES


def _envelope(size: int = 1000, ctr: int = 1) -> bytes:
    """A real signed envelope whose body is ``size`` incompressible bytes."""
    return env.seal(os.urandom(size), signing_key=AGENT_SIGN, sender=AGENT_ID, to=env.SERVER,
                    ctr=ctr, kind="batch", compress=False)


def _mails(data: bytes, *, max_mail_bytes: int = mail.DEFAULT_MAX_MAIL_BYTES,
           agent_key: PrivateKey = AGENT_BOX) -> list[bytes]:
    return mail.seal_mails(data, agent_id=AGENT_ID, agent_key=agent_key,
                           server_key=SERVER_BOX.public_key, mail_from="agent@customer.test",
                           mail_to="intake@fleet.test", max_mail_bytes=max_mail_bytes)


def _open(raw: bytes, **kw) -> mail.Part:
    return mail.open_part(mail.extract_part(raw), server_key=SERVER_BOX, **kw)


def _registered(agent_id: str):
    return AGENT_BOX.public_key if agent_id == AGENT_ID else None


def test_one_mail_round_trip_gives_back_the_signed_envelope():
    data = _envelope(2000)
    mails = _mails(data)
    assert len(mails) == 1
    parsed = email.message_from_bytes(mails[0], policy=email.policy.default)
    assert parsed["To"] == "intake@fleet.test"
    assert parsed[mail.MARK_HEADER] == "1"
    assert data not in mails[0]  # encrypted, not merely encoded
    part = _open(mails[0], sender_keys=_registered)
    assert (part.agent, part.index, part.total, part.size) == (AGENT_ID, 0, 1, len(data))
    assert part.sender_key == key_id(AGENT_BOX.public_key)
    done = mail.Reassembler().add(part)
    assert done is not None
    assert done.data == data
    sealed = env.split(done.data)
    env.verify(sealed, AGENT_SIGN.verify_key)  # the agent's signature survived the trip
    assert sealed.header.sender == AGENT_ID


def test_parts_out_of_order_reassemble_and_every_mail_respects_the_cap():
    data = _envelope(60_000)
    mails = _mails(data, max_mail_bytes=SMALL)
    assert len(mails) == -(-len(data) // mail.chunk_bytes(SMALL))
    assert len(mails) > 3
    assert all(len(m) <= SMALL for m in mails)
    r = mail.Reassembler()
    order = [2, 0, len(mails) - 1, *range(3, len(mails) - 1), 1]
    results = [r.add(_open(mails[i])) for i in order]
    assert results[:-1] == [None] * (len(mails) - 1)
    assert results[-1] is not None
    assert results[-1].data == data
    assert r.pending == 1  # kept until the intake says it is done with it
    r.done(results[-1].key)
    assert (r.pending, r.buffered_bytes) == (0, 0)


@pytest.mark.parametrize("cap", [SMALL, 50_000, 1_000_000])
def test_mail_size_stays_under_the_cap_at_the_largest_chunk(cap):
    data = _envelope(mail.chunk_bytes(cap) * 2 - 300)  # two full-size parts
    mails = _mails(data, max_mail_bytes=cap)
    assert len(mails) == 2
    assert max(len(m) for m in mails) <= cap


def test_a_flipped_ciphertext_byte_is_refused():
    raw = mail.extract_part(_mails(_envelope())[0])
    tampered = raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:]
    with pytest.raises(mail.MailError) as info:
        mail.open_part(tampered, server_key=SERVER_BOX)
    assert info.value.code == "bad-crypto"


def test_a_changed_clear_header_is_refused():
    """The agent named in clear is repeated inside the encryption."""
    raw = mail.extract_part(_mails(_envelope())[0])
    forged = raw.replace(AGENT_ID.encode(), b"ffffffff-3b7e-4a0e-9a52-0c9f3c1e2f11", 1)
    with pytest.raises(mail.MailError) as info:
        mail.open_part(forged, server_key=SERVER_BOX)
    assert info.value.code == "malformed"
    assert "disagree" in str(info.value)


def test_wrong_server_key_is_refused():
    with pytest.raises(mail.MailError) as info:
        mail.open_part(mail.extract_part(_mails(_envelope())[0]),
                       server_key=PrivateKey.generate())
    assert info.value.code == "bad-crypto"


def test_key_not_registered_for_the_agent_is_refused():
    """A stranger with a fresh key pair cannot pose as a known agent."""
    raw = _mails(_envelope(), agent_key=PrivateKey.generate())[0]
    with pytest.raises(mail.MailError) as info:
        _open(raw, sender_keys=_registered)
    assert info.value.code == "wrong-key"
    with pytest.raises(mail.MailError) as info:
        _open(raw, sender_keys=lambda _agent: None)
    assert info.value.code == "unknown-sender"


def test_missing_part_delivers_nothing_and_the_set_expires():
    now = [1000.0]
    r = mail.Reassembler(mail.Limits(ttl_s=3600), clock=lambda: now[0])
    mails = _mails(_envelope(30_000), max_mail_bytes=SMALL)
    assert len(mails) >= 3
    for raw in mails[:-1]:
        assert r.add(_open(raw)) is None
    assert r.pending == 1
    assert r.buffered_bytes == sum(len(_open(m).data) for m in mails[:-1])
    now[0] += 3599
    assert r.expire() == []
    now[0] += 2
    gone = r.expire()
    assert len(gone) == 1
    assert (gone[0].agent, gone[0].have, gone[0].total) == (AGENT_ID, len(mails) - 1,
                                                            len(mails))
    assert (r.pending, r.buffered_bytes) == (0, 0)
    # The late last part starts a new set on its own and completes nothing.
    assert r.add(_open(mails[-1])) is None


def test_duplicate_parts_and_finished_messages():
    mails = _mails(_envelope(20_000), max_mail_bytes=SMALL)
    r = mail.Reassembler()
    first = _open(mails[0])
    assert r.add(first) is None
    assert r.add(first) is None  # the same mail twice: buffered once
    assert r.buffered_bytes == len(first.data)
    done = None
    for raw in mails[1:]:
        done = r.add(_open(raw))
    assert done is not None
    r.done(done.key)
    assert r.finished(first)
    assert r.add(_open(mails[1])) is None  # a late copy is ignored
    assert r.pending == 0


def test_retract_lets_a_retried_last_part_complete_the_set():
    mails = _mails(_envelope(20_000), max_mail_bytes=SMALL)
    r = mail.Reassembler()
    for raw in mails[:-1]:
        r.add(_open(raw))
    last = _open(mails[-1])
    assert r.add(last) is not None
    r.retract(last)  # delivery failed for now; the mail system will retry
    assert r.pending == 1
    again = r.add(last)
    assert again is not None
    assert env.split(again.data).header.sender == AGENT_ID


def test_too_many_parts_and_too_large_messages_are_refused():
    mails = _mails(_envelope(60_000), max_mail_bytes=SMALL)
    part = _open(mails[0])
    with pytest.raises(mail.MailError) as info:
        mail.Reassembler(mail.Limits(max_parts=part.total - 1)).add(part)
    assert info.value.code == "too-many-parts"
    with pytest.raises(mail.MailError) as info:
        mail.Reassembler(mail.Limits(max_message_bytes=part.size - 1)).add(part)
    assert info.value.code == "too-large"
    with pytest.raises(mail.MailError) as info:
        mail.extract_part(mails[0], max_mail_bytes=len(mails[0]) - 1)
    assert info.value.code == "too-large"
    with pytest.raises(mail.MailError) as info:
        _mails(b"x" * (env.MAX_ENVELOPE_BYTES + 1))
    assert info.value.code == "too-large"
    with pytest.raises(mail.MailError) as info:
        mail.seal_parts(_envelope(5000), agent_id=AGENT_ID, agent_key=AGENT_BOX,
                        server_key=SERVER_BOX.public_key, chunk=4)
    assert info.value.code == "too-many-parts"


def test_a_full_buffer_defers_instead_of_dropping():
    mails = _mails(_envelope(30_000), max_mail_bytes=SMALL)
    first = _open(mails[0])
    r = mail.Reassembler(mail.Limits(max_buffered_bytes=len(first.data) + 10))
    assert r.add(first) is None
    with pytest.raises(mail.MailError) as info:
        r.add(_open(mails[1]))
    assert info.value.code == "busy"
    assert info.value.temporary
    assert r.buffered_bytes == len(first.data)


def test_parts_of_another_message_under_the_same_id_are_refused():
    a = mail.seal_parts(_envelope(20_000), agent_id=AGENT_ID, agent_key=AGENT_BOX,
                        server_key=SERVER_BOX.public_key, chunk=8000, message_id="a" * 32)
    b = mail.seal_parts(_envelope(20_000), agent_id=AGENT_ID, agent_key=AGENT_BOX,
                        server_key=SERVER_BOX.public_key, chunk=8000, message_id="a" * 32)
    r = mail.Reassembler()
    r.add(mail.open_part(a[0], server_key=SERVER_BOX))
    with pytest.raises(mail.MailError) as info:
        r.add(mail.open_part(b[1], server_key=SERVER_BOX))
    assert info.value.code == "inconsistent"


def test_a_gateway_wrapping_survives():
    """Disclaimers, subject tags, an extra multipart level and re-folded base64 do
    not matter: everything the intake needs is inside the attachment."""
    data = _envelope(3000)
    original = email.message_from_bytes(_mails(data)[0], policy=email.policy.default)
    attachment = next(p for p in original.walk()
                      if p.get_content_type() == mail.CONTENT_TYPE)
    folded = "".join(str(attachment.get_payload()).split())
    attachment.set_payload("\r\n".join(folded[i:i + 64] for i in range(0, len(folded), 64)))
    wrapped = EmailMessage()
    wrapped["Subject"] = "[EXTERNAL] " + str(original["Subject"])
    wrapped["From"], wrapped["To"] = original["From"], original["To"]
    wrapped.set_content("This message came from outside the organisation.")
    wrapped.make_mixed()
    wrapped.attach(attachment)
    raw = wrapped.as_bytes()
    assert b"multipart/mixed" in raw
    done = mail.Reassembler().add(_open(raw))
    assert done is not None
    assert done.data == data


# --- hostile MIME -----------------------------------------------------------------------

_HEAD = b"From: a@b.test\r\nTo: c@d.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"


def _attachment(body: bytes, cte: bytes = b"base64") -> bytes:
    return (b"Content-Type: " + mail.CONTENT_TYPE.encode() + b"\r\n"
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body + b"\r\n")


def _nested(depth: int, leaf: bytes) -> bytes:
    out = leaf
    for level in range(depth):
        boundary = f"b{level}".encode()
        out = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n"
               b"--" + boundary + b"\r\n" + out + b"--" + boundary + b"--\r\n")
    return out


def _code(raw: bytes) -> str:
    with pytest.raises(mail.MailError) as info:
        mail.extract_part(raw)
    assert str(info.value)  # a clear message
    return info.value.code


def test_huge_header_block_is_refused():
    assert _code(_HEAD + b"X-Junk: " + b"a" * 70_000 + b"\r\n\r\nbody") == "bad-mime"


def test_too_many_header_lines_are_refused():
    assert _code(_HEAD + b"X-J: 1\r\n" * 1500 + b"\r\nbody") == "bad-mime"


def test_no_header_end_is_refused():
    assert _code(os.urandom(2000).replace(b"\n", b"")) == "bad-mime"


def test_deeply_nested_multiparts_are_refused():
    part = _attachment(base64.b64encode(b"FRM1 x"))
    assert mail.extract_part(_HEAD + _nested(3, part)) == b"FRM1 x"  # modest nesting is fine
    assert _code(_HEAD + _nested(12, part)) == "bad-mime"
    with pytest.raises(mail.MailError, match="nested deeper"):
        mail.extract_part(_HEAD + _nested(12, part))


def test_many_multipart_sections_are_refused_before_parsing():
    many = b"".join(b"Content-Type: multipart/mixed\r\n" for _ in range(40))
    with pytest.raises(mail.MailError, match="multipart sections"):
        mail.extract_part(_HEAD + b"\r\n" + many)


def test_non_base64_attachments_are_refused():
    assert _code(_HEAD + _attachment(b"FRM1 raw bytes", cte=b"8bit")) == "bad-encoding"
    assert _code(_HEAD + _attachment(b"FRM1 raw=20bytes", cte=b"quoted-printable")) \
        == "bad-encoding"
    assert _code(_HEAD + _attachment(b"RlJNMSB4!!not*base64")) == "bad-encoding"


def test_mail_without_or_with_two_fleetroom_parts():
    assert _code(_HEAD + b"\r\nHello, just a normal mail.\r\n") == "not-fleetroom"
    part = _attachment(base64.b64encode(b"FRM1 x"))
    two = (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n" + part
           + b"--zz\r\n" + part + b"--zz--\r\n")
    assert _code(_HEAD + two) == "bad-mime"


def test_garbage_parts_are_refused():
    for junk, code in [(b"hello", "malformed"),
                       (b"FRM1 {not json}\n" + os.urandom(100), "malformed"),
                       (b"FRM1 " + b"{" * 600, "malformed")]:
        with pytest.raises(mail.MailError) as info:
            mail.open_part(junk, server_key=SERVER_BOX)
        assert info.value.code == code

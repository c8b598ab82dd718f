"""The signed envelope: round trip, tampering, framing faults, decompression caps."""

import gzip
import json
from datetime import UTC, datetime

import pytest
from fleetroom_protocol import envelope as env
from fleetroom_protocol.keys import key_id
from fleetroom_protocol.messages import AgentState, BatchBody, encode_batch_body
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

KEY = SigningKey.generate()
OTHER = SigningKey.generate()


def _seal(body: bytes = b'{"state":{}}', **kw):
    args = {"signing_key": KEY, "sender": "agent-a", "to": "server", "ctr": 7,
            "kind": "batch"} | kw
    return env.seal(body, **args)


def test_round_trip_verifies_and_returns_the_body():
    data = _seal(b'{"items":[],"state":{"version":"1"}}')
    sealed = env.split(data)
    assert sealed.header.sender == "agent-a"
    assert sealed.header.ctr == 7
    assert sealed.header.key == key_id(KEY.verify_key)
    env.verify(sealed, KEY.verify_key)
    body = env.body_model(sealed, BatchBody)
    assert body.state.version == "1"


def test_identity_encoding_is_not_compressed():
    data = _seal(b'{"state":{}}', compress=False)
    assert data.endswith(b'{"state":{}}')
    sealed = env.split(data)
    env.verify(sealed, KEY.verify_key)
    assert env.body_json(sealed) == {"state": {}}


def test_other_key_is_refused():
    sealed = env.split(_seal())
    with pytest.raises(env.EnvelopeError) as info:
        env.verify(sealed, OTHER.verify_key)
    assert info.value.code == "bad-signature"


def test_forged_key_id_with_other_signature_is_refused():
    """Claiming the right key id does not help a signature made with another key."""
    data = _seal(signing_key=OTHER)
    sealed = env.split(data)
    forged = env.Sealed(sealed.header.model_copy(update={"key": key_id(KEY.verify_key)}),
                        sealed.signature, sealed.signed, sealed.body_offset)
    with pytest.raises(env.EnvelopeError) as info:
        env.verify(forged, KEY.verify_key)
    assert info.value.code == "bad-signature"


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_after_the_magic_is_refused(position, flip):
    data = bytearray(_seal(b'{"items":[],"state":{}}'))
    index = len(env.MAGIC) + position % (len(data) - len(env.MAGIC))
    data[index] ^= flip
    with pytest.raises(env.EnvelopeError) as info:
        env.verify(env.split(bytes(data)), KEY.verify_key)
    assert info.value.code in {"malformed", "bad-signature"}


@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_a_clear_error(data):
    with pytest.raises(env.EnvelopeError):
        env.verify(env.split(data), KEY.verify_key)


def test_every_truncation_is_refused():
    data = _seal(b'{"items":[],"state":{"hostname":"x"}}')
    for cut in range(len(data)):
        with pytest.raises(env.EnvelopeError):
            env.verify(env.split(data[:cut]), KEY.verify_key)


def test_envelope_over_the_cap_is_refused_before_parsing():
    with pytest.raises(env.EnvelopeError) as info:
        env.split(b"x" * 101, max_bytes=100)
    assert info.value.code == "too-large"


def test_gzip_bomb_stops_at_the_cap():
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    assert len(bomb) < 100_000
    sealed = env.split(_seal(bomb, compress=False))
    env.verify(sealed, KEY.verify_key)
    # The sender claimed "identity"; re-seal the bomb as a gzip body to test inflation.
    header = sealed.header.model_copy(update={"enc": "gzip"})
    signed = header.model_dump_json().encode() + b"\n" + bomb
    data = env.MAGIC + env._b64(KEY.sign(signed).signature) + b"\n" + signed
    sealed = env.split(data)
    env.verify(sealed, KEY.verify_key)
    with pytest.raises(env.EnvelopeError) as info:
        env.body_bytes(sealed, max_bytes=1024 * 1024)
    assert info.value.code == "too-large"


def test_signed_garbage_body_is_a_body_error():
    sealed = env.split(_seal(b"not json", compress=True))
    env.verify(sealed, KEY.verify_key)
    with pytest.raises(env.EnvelopeError) as info:
        env.body_json(sealed)
    assert info.value.code == "bad-body"
    sealed = env.split(_seal(b'{"items": 5}'))
    with pytest.raises(env.EnvelopeError) as info:
        env.body_model(sealed, BatchBody)
    assert info.value.code == "bad-body"
    assert "items" in str(info.value)


def test_header_rejects_unknown_fields_and_overlong_lines():
    signed = b'{"v":1,"extra":1}\n'
    data = env.MAGIC + env._b64(KEY.sign(signed).signature) + b"\n" + signed
    with pytest.raises(env.EnvelopeError, match="header invalid"):
        env.split(data)
    signed = b"{" + b" " * 5000 + b"}\n"
    data = env.MAGIC + env._b64(KEY.sign(signed).signature) + b"\n" + signed
    with pytest.raises(env.EnvelopeError, match="header line"):
        env.split(data)


def test_spliced_batch_body_matches_the_model():
    payloads = [json.dumps({"n": i, "text": "Grüße \"quoted\""}).encode() for i in range(3)]
    items = [("store1", "readings", i + 1, 5, 1700000000.5, p) for i, p in enumerate(payloads)]
    raw = encode_batch_body(items, AgentState(hostname="pc", queue_items=3))
    body = BatchBody.model_validate_json(raw)
    assert [(i.stream, i.seq, i.payload) for i in body.items] == [
        ("readings", n + 1, json.loads(p)) for n, p in enumerate(payloads)]
    assert body.state.hostname == "pc"
    assert body.state.queue_items == 3


def test_timestamp_is_the_senders_clock():
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    sealed = env.split(_seal(now=when))
    assert sealed.header.ts == when


def test_non_canonical_signature_encoding_is_refused():
    """Other padding bits decode to the same signature; only one spelling is accepted,
    so one signed message has exactly one valid byte string."""
    data = _seal()
    first = data.index(b"\n")
    text = data[len(env.MAGIC):first]
    assert text.endswith(b"==")
    last = text[-3:-2]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(last) ^ 1:][:1]  # differs only in a padding bit
    mutated = data[:len(env.MAGIC)] + text[:-3] + sibling + b"==" + data[first:]
    import base64

    assert base64.b64decode(text[:-3] + sibling + b"==") == base64.b64decode(text)
    with pytest.raises(env.EnvelopeError, match="canonical"):
        env.split(mutated)

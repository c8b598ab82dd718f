"""Credential sets: strict parsing, order per network, memory of what worked, no leaks."""

from __future__ import annotations

import pytest
from fleetroom_agent.collect.credentials import (
    CredentialConfigError,
    CredentialMemory,
    load_credential_file,
    make_credential,
)
from fleetroom_agent.snmp.types import Target

GOOD = """
[[credentials]]
name = "v3"
version = "3"
user = "ops"
auth_proto = "SHA256"
auth_key = "auth-secret-123"
priv_proto = "AES256"
priv_key = "priv-secret-456"
networks = ["10.1.0.0/16"]

[[credentials]]
name = "public"
version = "2c"
community = "public"
"""


def test_file_order_and_networks(tmp_path):
    f = tmp_path / "creds.toml"
    f.write_text(GOOD)
    sets = load_credential_file(f)
    mem = CredentialMemory()
    inside, outside = Target("10.1.2.3"), Target("192.0.2.7")
    assert [c.name for c in mem.order(inside, sets)] == ["v3", "public"]
    assert [c.name for c in mem.order(outside, sets)] == ["public"]
    mem.remember(inside, sets[1].credential)
    assert [c.name for c in mem.order(inside, sets)] == ["public", "v3"]


def test_secrets_never_in_repr_or_errors(tmp_path):
    f = tmp_path / "creds.toml"
    f.write_text(GOOD)
    cred = load_credential_file(f)[0].credential
    assert "auth-secret-123" not in repr(cred)
    assert "priv-secret-456" not in repr(cred)
    assert "auth-secret-123" not in cred.describe()
    with pytest.raises(CredentialConfigError) as exc:
        make_credential(name="x", version="3", user="u", auth_proto="SHA", auth_key="short7!")
    assert "short7!" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[credentials]]\nname='a'\nversion='4'\n", "version"),
        ("[[credentials]]\nname='a'\nversion='3'\n", "user"),
        ("[[credentials]]\nname='a'\nbogus='x'\n", "unknown keys"),
        ("[[credentials]]\nname='a'\nnetworks=['10.0.0.0/33']\n", "bad network"),
        ("[[credentials]]\nname='a'\nversion='3'\nuser='u'\npriv_key='12345678'\n"
         "auth_proto='none'\n", "privacy needs authentication"),
        ("credentials = 3\n", "expected one or more"),
        ("[[credentials\n", "line 1"),
        ("[[credentials]]\nname='a'\n[[credentials]]\nname='a'\n", "unique"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, text, message):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(CredentialConfigError, match=message):
        load_credential_file(f)


def test_security_levels():
    assert make_credential(name="a", version="3", user="u").security_level == "noAuthNoPriv"
    assert make_credential(name="a", version="3", user="u", auth_key="12345678"
                           ).security_level == "authNoPriv"
    c = make_credential(name="a", version="v3", user="u", auth_key="12345678",
                        priv_key="abcdefgh")
    assert c.security_level == "authPriv"
    assert (c.auth_proto, c.priv_proto) == ("SHA", "AES")
    assert make_credential(name="p", version="v1").version == "1"

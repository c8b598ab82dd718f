"""Profile bundles: build → sign → verify → unpack, and the properties the agent relies on."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from datetime import timedelta

import pytest
from fleetroom_profiles import ProfileSet, shipped_profile_dir
from fleetroom_profiles.bundle import (
    MAX_FILE_BYTES,
    SIGN_CONTEXT,
    BundleError,
    build_bundle,
    check_path,
    check_profiles,
    check_yaml_safety,
    files_from_directory,
    key_id,
    open_bundle,
    verify_signature,
)
from fleetroom_protocol.keys import key_id as protocol_key_id

from packages.profiles.tests.test_bundle_corpus import (
    ACME,
    INSTALLED,
    KEY,
    NOW,
    OTHER_KEY,
    good_bundle,
    shipped_files,
)


def test_round_trip_gives_back_every_shipped_file_byte_for_byte():
    data = good_bundle(extra={"vendors/acme.yaml": ACME})
    bundle = open_bundle(data, KEY.verify_key, installed_version=INSTALLED, now=NOW)
    on_disk = {p.relative_to(shipped_profile_dir()).as_posix(): p.read_bytes()
               for p in shipped_profile_dir().rglob("*.yaml")}
    assert bundle.files == {**on_disk, "vendors/acme.yaml": ACME}
    assert bundle.version == INSTALLED + 1
    assert bundle.manifest.created_at == NOW
    assert bundle.manifest.expires_at == NOW + timedelta(days=30)
    assert bundle.key_id == protocol_key_id(KEY.verify_key) == key_id(KEY.verify_key)
    check_profiles(bundle.files)


def test_manifest_lists_path_size_and_sha256_and_its_hash_is_reported():
    data = good_bundle()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        raw = zf.read("manifest.json")
        names = zf.namelist()
        assert zf.testzip() is None  # an ordinary zip: any unzip tool can inspect it
        assert zf.comment.startswith(b"FRPB1 " + key_id(KEY.verify_key).encode())
    manifest = json.loads(raw)
    assert manifest["format"] == "fleetroom-profile-bundle"
    assert manifest["format_version"] == 1
    files = shipped_files()
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        p: (len(c), hashlib.sha256(c).hexdigest()) for p, c in files.items()}
    assert names == ["manifest.json", *sorted(files)]
    bundle = open_bundle(data, KEY.verify_key, installed_version=0, now=NOW)
    assert bundle.manifest_sha256 == hashlib.sha256(raw).hexdigest()


def test_signature_covers_every_byte_before_the_trailer():
    data = good_bundle()
    signature_line = data[-111:]
    signed = data[:-111]
    import base64

    signature = base64.b64decode(signature_line.split(b" ")[2])
    KEY.verify_key.verify(SIGN_CONTEXT + signed, signature)  # raises if not
    for offset in (0, 30, len(signed) // 2, len(signed) - 1):  # local header .. end record
        tampered = bytearray(data)
        tampered[offset] ^= 0x20
        with pytest.raises(BundleError) as caught:
            verify_signature(bytes(tampered), KEY.verify_key)
        assert caught.value.code in {"bad-signature", "malformed"}


def test_same_input_same_bytes():
    """Ed25519 is deterministic and zip timestamps are fixed: a bundle is reproducible."""
    assert good_bundle() == good_bundle()
    assert good_bundle() != good_bundle(key=OTHER_KEY)


def test_build_refuses_what_agents_would_refuse():
    files = shipped_files()
    with pytest.raises(BundleError, match="path traversal"):
        build_bundle({**files, "../evil.yaml": ACME}, version=1, signing_key=KEY,
                     created_at=NOW, expires_at=NOW + timedelta(days=1))
    with pytest.raises(BundleError, match=f"at most {MAX_FILE_BYTES}"):
        build_bundle({**files, "vendors/big.yaml": b"#" * (MAX_FILE_BYTES + 1)}, version=1,
                     signing_key=KEY, created_at=NOW, expires_at=NOW + timedelta(days=1))
    with pytest.raises(BundleError, match="valid for more than 366 days"):
        build_bundle(files, version=1, signing_key=KEY, created_at=NOW,
                     expires_at=NOW + timedelta(days=400))
    with pytest.raises(BundleError, match="expires before it was created"):
        build_bundle(files, version=1, signing_key=KEY, created_at=NOW, expires_at=NOW)


def test_expiry_is_judged_by_the_time_given():
    data = good_bundle(days=2)
    open_bundle(data, KEY.verify_key, installed_version=0, now=NOW + timedelta(days=1))
    with pytest.raises(BundleError) as caught:
        open_bundle(data, KEY.verify_key, installed_version=0, now=NOW + timedelta(days=2))
    assert caught.value.code == "expired"
    assert "expired at 2025-06-03 12:00 UTC (time used: 2025-06-03 12:00 UTC)" in str(
        caught.value)


@pytest.mark.parametrize(("path", "words"), [
    ("vendors/hp.yaml", None),
    ("base/printer-mib.yml", None),
    ("a/b/c/d.yaml", None),
    ("a/b/c/d/e.yaml", "deeper than 4"),
    ("", "empty"),
    ("x" * 201 + ".yaml", "longer than 200"),
    ("./hp.yaml", "path traversal"),
    ("vendors//hp.yaml", "only letters"),
    (".hidden.yaml", "only letters"),
    ("vendors/hp.yaml\x00.txt", "only letters"),
    ("vendors/hp.YAML", "only .yaml, .yml"),
    ("vendors/aux.yml", "reserved device name"),
    ("vendors/lpt1.foo.yaml", "reserved device name"),
    ("\\\\server\\share\\x.yaml", "backslash"),
    ("vendörs/hp.yaml", "only letters"),
])
def test_path_rules(path, words):
    if words is None:
        check_path(path)
        return
    with pytest.raises(BundleError) as caught:
        check_path(path)
    assert caught.value.code == "unsafe-path"
    assert words in str(caught.value)


def test_alias_check_is_linear_even_for_a_huge_laughs_document():
    """Thirty levels of nine-fold aliases would be 9**30 nodes once composed; the event
    scan stops at the first anchor without composing anything."""
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 30)]
    text = "name: laughs\nabstract: true\n" + "\n".join(levels) + "\n"
    started = time.perf_counter()
    with pytest.raises(BundleError, match="anchors and aliases are not allowed"):
        check_yaml_safety(text, "laughs.yaml")
    assert time.perf_counter() - started < 0.05


def test_shipped_profiles_pass_the_content_checks_and_load_from_a_bundle(tmp_path):
    """What the agent will do with a bundle: unpack to a directory and load it there."""
    bundle = open_bundle(good_bundle(extra={"vendors/acme.yaml": ACME}), KEY.verify_key,
                         installed_version=0, now=NOW)
    for path, content in bundle.files.items():
        target = tmp_path.joinpath(*path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    assert files_from_directory(tmp_path) == bundle.files
    profiles = ProfileSet.load([tmp_path], include_shipped=False)
    assert profiles.profiles["acme"].path == str(tmp_path / "vendors" / "acme.yaml")
    assert profiles.resolve("acme").chain[-1] == "acme"
    assert "generic-printer" in profiles.resolve("acme").chain

"""A hostile bundle corpus, generated here: every bundle must be refused with a clear
error, fast (< 1 s each), before anything is unpacked anywhere.

The builders (:func:`hostile_corpus`, :func:`raw_bundle`) are also used by the
agent's tests, which check that the old profiles stay active after each refusal.
Most hostile bundles are signed with the *right* key: they model a compromised or
buggy publisher, the case every check after the signature exists for.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import time
import warnings
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fleetroom_profiles import shipped_profile_dir
from fleetroom_profiles.bundle import (
    MAX_BUNDLE_BYTES,
    MAX_FILE_BYTES,
    MAX_FILES,
    BundleError,
    build_bundle,
    check_profiles,
    files_from_directory,
    open_bundle,
    sign_zip,
)
from nacl.signing import SigningKey

KEY = SigningKey(hashlib.sha256(b"fleetroom test server key").digest())
OTHER_KEY = SigningKey(hashlib.sha256(b"somebody else").digest())
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
INSTALLED = 5

ACME = b"""\
name: acme
extends: [generic-printer]
description: Acme printers (test corpus).
match:
  - sysobjectid: 1.3.6.1.4.1.99999
counters:
  - name: total
    oid: 1.3.6.1.4.1.99999.1.0
    source: test corpus
"""

ALIAS_BOMB = b"""\
name: laughs
abstract: true
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

INVALID_PROFILE = b"""\
name: broken
extends: [generic-printer]
match:
  - sysobjectid: 1.3.6.1.4.1.99999
counters:
  - name: total
    oid: prtMarkerLifeCount.1.1
    source: test corpus
"""


def shipped_files() -> dict[str, bytes]:
    return files_from_directory(shipped_profile_dir())


def good_bundle(version: int = INSTALLED + 1, *, key: SigningKey = KEY,
                extra: dict[str, bytes] | None = None, created: datetime = NOW,
                days: int = 30) -> bytes:
    files = {**shipped_files(), **(extra or {})}
    return build_bundle(files, version=version, signing_key=key, created_at=created,
                        expires_at=created + timedelta(days=days))


def manifest_for(files: dict[str, bytes], *, version: int = INSTALLED + 1,
                 created: datetime = NOW, expires: datetime | None = None) -> dict:
    return {
        "format": "fleetroom-profile-bundle", "format_version": 1, "version": version,
        "created_at": created.isoformat(),
        "expires_at": (expires or created + timedelta(days=30)).isoformat(),
        "files": [{"path": p, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()}
                  for p, c in sorted(files.items())],
    }


def raw_bundle(entries: list[tuple[zipfile.ZipInfo | str, bytes]], *,
               manifest: dict | bytes | None = None, key: SigningKey = KEY,
               compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A signed bundle with exactly these zip entries; the manifest is derived from
    them unless given (so each case breaks one rule only)."""
    if manifest is None:
        names = [e.filename if isinstance(e, zipfile.ZipInfo) else e for e, _ in entries]
        manifest = manifest_for(dict(zip(names, [c for _, c in entries], strict=True)))
    raw_manifest = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are a case on purpose
        zf.writestr("manifest.json", raw_manifest)
        for entry, content in entries:
            zf.writestr(entry, content)
    return sign_zip(buffer.getvalue(), key)


def _with(files: dict[str, bytes], **changes: bytes) -> list[tuple[str, bytes]]:
    merged = {**files, **changes}
    return sorted(merged.items())


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    code: str
    words: str


def hostile_corpus() -> list[Case]:
    """Every way a bundle must be refused (for ``installed version == INSTALLED``, at NOW)."""
    shipped = shipped_files()
    good = good_bundle()
    cases: list[Case] = []

    def add(name: str, data: bytes, code: str, words: str) -> None:
        cases.append(Case(name, data, code, words))

    # --- signature -----------------------------------------------------------------
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 0x01
    add("bad-signature", bytes(tampered), "bad-signature", "signature does not verify")
    add("other-key", good_bundle(key=OTHER_KEY), "wrong-key", "signed by key")
    forged = bytearray(good_bundle(key=OTHER_KEY))
    forged[-105:-89] = good[-105:-89]  # the trailer claims the trusted key's id
    add("forged-key-id", bytes(forged), "bad-signature", "signature does not verify")
    add("unsigned-zip", _unsigned(shipped), "malformed", "signature trailer missing")
    add("truncated-half", good[: len(good) // 2], "malformed", "truncated")
    add("truncated-1-byte", good[:-1], "malformed", "truncated")
    add("empty-file", b"", "malformed", "not a signed profile bundle")
    add("not-a-zip", b"\x89PNG\r\n" + bytes(range(256)) * 4, "malformed", "not a signed")
    add("oversize-bundle", good + b"\0" * (MAX_BUNDLE_BYTES + 1 - len(good)), "too-large",
        f"at most {MAX_BUNDLE_BYTES}")

    # --- version and time ----------------------------------------------------------
    add("older-version", good_bundle(INSTALLED - 2), "not-newer", "rollback refused")
    add("same-version", good_bundle(INSTALLED), "not-newer", "already installed")
    add("expired", good_bundle(created=NOW - timedelta(days=40)), "expired", "expired at")
    add("frozen-lifetime", raw_bundle(
        _with(shipped), manifest=manifest_for(shipped, expires=NOW + timedelta(days=3650))),
        "malformed", "valid for more than")
    add("expires-before-created", raw_bundle(
        _with(shipped), manifest=manifest_for(shipped, expires=NOW - timedelta(days=1))),
        "malformed", "expires before it was created")

    # --- container -----------------------------------------------------------------
    zeros = b"# padding\n" + b" " * (20 * 1024 * 1024)
    add("zip-bomb", raw_bundle([("vendors/bomb.yaml", zeros)],
                               manifest=manifest_for({"vendors/bomb.yaml": b"x"})),
        "bomb", "zip bomb")
    add("traversal", raw_bundle(_with(shipped, **{"../x.yaml": ACME})), "unsafe-path",
        "path traversal")
    add("traversal-inside", raw_bundle(_with(shipped, **{"vendors/../../x.yaml": ACME})),
        "unsafe-path", "path traversal")
    add("absolute-path", raw_bundle(_with(shipped, **{"/etc/fleetroom/x.yaml": ACME})),
        "unsafe-path", "absolute")
    add("drive-letter", raw_bundle(_with(shipped, **{"C:/x.yaml": ACME})), "unsafe-path",
        "absolute")
    add("backslash", raw_bundle(_with(shipped, **{"..\\x.yaml": ACME})), "unsafe-path",
        "backslash")
    link = zipfile.ZipInfo("vendors/link.yaml")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    add("symlink-entry", raw_bundle([*_with(shipped), (link, b"/etc/passwd")]), "unsafe-path",
        "symbolic link")
    directory = zipfile.ZipInfo("vendors/sub/")
    directory.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
    add("directory-entry", raw_bundle([*_with(shipped), (directory, b"")],
                                      manifest=manifest_for(shipped)),
        "unsafe-path", "is a directory")
    add("python-file", raw_bundle(_with(shipped, **{"decoders/evil.py": b"import os"})),
        "unsafe-path", "only .yaml, .yml files")
    add("device-name", raw_bundle(_with(shipped, **{"vendors/con.yaml": ACME})),
        "unsafe-path", "reserved device name")
    add("duplicate-entry", raw_bundle([*_with(shipped), ("vendors/hp.yaml", b"x")],
                                      manifest=manifest_for(shipped)),
        "unsafe-path", "appears twice")
    add("case-duplicate", raw_bundle(_with(shipped, **{"vendors/HP.yaml": ACME})),
        "unsafe-path", "case-insensitively")
    noise = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() + b"\n"
                     for i in range(MAX_FILE_BYTES // 64 + 10))
    oversize = b"# " + noise.replace(b"\n", b"\n# ")
    add("oversize-file", raw_bundle(_with(shipped, **{"vendors/huge.yaml": oversize})),
        "too-large", f"at most {MAX_FILE_BYTES}")
    many = {f"vendors/m{i:05d}.yaml": b"# empty\n" for i in range(MAX_FILES + 1)}
    add("too-many-files", raw_bundle(sorted(many.items()), manifest=manifest_for({})),
        "too-many-files", f"more than {MAX_FILES}")
    add("bzip2-entries", raw_bundle(_with(shipped), compression=zipfile.ZIP_BZIP2),
        "malformed", "unsupported compression")

    # --- manifest ------------------------------------------------------------------
    wrong_hash = manifest_for(shipped)
    wrong_hash["files"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    add("hash-mismatch", raw_bundle(_with(shipped), manifest=wrong_hash), "hash-mismatch",
        "SHA-256 differs")
    wrong_size = manifest_for(shipped)
    wrong_size["files"][0]["size"] += 1
    add("size-mismatch", raw_bundle(_with(shipped), manifest=wrong_size), "hash-mismatch",
        "size differs")
    add("unlisted-file", raw_bundle(_with(shipped, **{"vendors/acme.yaml": ACME}),
                                    manifest=manifest_for(shipped)),
        "malformed", "not in the manifest")
    add("missing-file", raw_bundle(_with(shipped),
                                   manifest=manifest_for({**shipped, "vendors/acme.yaml": ACME})),
        "malformed", "missing")
    add("manifest-not-json", raw_bundle(_with(shipped), manifest=b"{not json"), "malformed",
        "not JSON")
    add("manifest-future-format", raw_bundle(
        _with(shipped), manifest={**manifest_for(shipped), "format_version": 2}),
        "malformed", "format version")
    add("manifest-extra-field", raw_bundle(
        _with(shipped), manifest={**manifest_for(shipped), "run": "rm -rf /"}),
        "malformed", "manifest.json invalid (run)")
    no_manifest = io.BytesIO()
    with zipfile.ZipFile(no_manifest, "w") as zf:
        zf.writestr("vendors/acme.yaml", ACME)
    add("no-manifest", sign_zip(no_manifest.getvalue(), KEY), "malformed",
        "manifest.json is missing")

    # --- content (checked after unpacking in memory) --------------------------------
    add("yaml-alias-bomb", raw_bundle(_with(shipped, **{"vendors/laughs.yaml": ALIAS_BOMB})),
        "unsafe-yaml", "anchors and aliases are not allowed")
    add("yaml-anchor", raw_bundle(_with(shipped, **{
        "vendors/anchor.yaml": b"name: anchor\nabstract: true\ndescription: &d text\n"})),
        "unsafe-yaml", "anchors and aliases are not allowed")
    deep = b"name: deep\nabstract: true\ndescription: " + b"[" * 5000 + b"]" * 5000 + b"\n"
    add("yaml-deep-nesting", raw_bundle(_with(shipped, **{"vendors/deep.yaml": deep})),
        "unsafe-yaml", "nested deeper than")
    add("yaml-python-tag", raw_bundle(_with(shipped, **{
        "vendors/tag.yaml": b"name: tag\nabstract: true\n"
                            b"description: !!python/object/apply:os.system ['id']\n"})),
        "invalid-profile", "YAML syntax")
    add("invalid-profile", raw_bundle(_with(shipped, **{"vendors/broken.yaml": INVALID_PROFILE})),
        "invalid-profile", "vendors/broken.yaml:7: counters.0.oid: Value error, not a numeric")
    add("not-utf8", raw_bundle(_with(shipped, **{"vendors/latin1.yaml": "name: caf\xe9\n".encode(
        "latin-1")})), "invalid-profile", "not UTF-8")
    add("duplicate-profile-name", raw_bundle(_with(shipped, **{
        "vendors/hp-copy.yaml": (shipped_profile_dir() / "vendors/hp.yaml").read_bytes()})),
        "invalid-profile", "profile name 'hp' is also used by")
    return cases


def _unsigned(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest_for(files)))
        for path, content in files.items():
            zf.writestr(path, content)
    return buffer.getvalue()


CORPUS = hostile_corpus()


def test_the_corpus_covers_every_required_kind():
    names = {c.name for c in CORPUS}
    assert names >= {"bad-signature", "other-key", "older-version", "same-version", "expired",
                     "zip-bomb", "yaml-alias-bomb", "traversal", "absolute-path",
                     "symlink-entry", "oversize-file", "too-many-files", "hash-mismatch",
                     "invalid-profile", "truncated-half"}
    assert len(names) == len(CORPUS)


def test_a_good_bundle_from_the_same_builders_opens():
    """The corpus is made by breaking one rule of a good bundle: the good one passes."""
    bundle = open_bundle(good_bundle(), KEY.verify_key, installed_version=INSTALLED, now=NOW)
    check_profiles(bundle.files)
    assert bundle.files == shipped_files()
    ok = raw_bundle(_with(shipped_files(), **{"vendors/acme.yaml": ACME}))
    bundle = open_bundle(ok, KEY.verify_key, installed_version=INSTALLED, now=NOW)
    check_profiles(bundle.files)
    assert bundle.files["vendors/acme.yaml"] == ACME


def _open_and_check(data: bytes) -> None:
    """What the agent does before writing anything: verify, unpack in memory, check."""
    check_profiles(open_bundle(data, KEY.verify_key, installed_version=INSTALLED, now=NOW).files)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_bundle_is_refused_fast_with_a_clear_error(case: Case):
    started = time.perf_counter()
    with pytest.raises(BundleError) as caught:
        _open_and_check(case.data)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{case.name} took {elapsed:.2f} s"
    assert caught.value.code == case.code, (case.name, caught.value.code, str(caught.value))
    assert case.words in str(caught.value), str(caught.value)

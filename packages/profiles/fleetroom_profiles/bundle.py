"""Signed profile bundles: one file that carries a whole profile set to the agents.

docuFORM ships its device knowledge (PMD files) as a daily update; ours is a
*bundle*.  The server builds and signs it, the agent verifies it, and both use
this module, so the rules an agent enforces are exactly the rules the server
builds by.  No I/O here beyond the bytes and paths the caller hands in.

Container: a plain zip (any unzip tool can look inside), holding

* ``manifest.json`` — format name and version, the bundle ``version`` (a
  monotonic integer), ``created_at``, ``expires_at`` and, for every profile
  file, its path, size and SHA-256;
* the profile files (``base/printer-mib.yaml``, ``vendors/hp.yaml``…).

The Ed25519 signature sits in the zip *comment* — the last bytes of the file,
fixed length — and covers every byte before it (context-prefixed, so it can never
be confused with an envelope signature by the same server key).  That gives the
rule the issue asks for literally: the agent checks the signature before it
parses anything, not even the zip directory.  What follows the signature check
still treats the content as hostile (defence in depth against a compromised or
buggy publisher): entry count, names, types, sizes, compression ratio, hashes,
YAML anchors/aliases/nesting — each limit is checked before the work it bounds.

Signing and verifying use any object with PyNaCl's ``SigningKey.sign`` /
``VerifyKey.verify`` shape (see :class:`Signer`, :class:`Verifier`), so this
package needs no crypto dependency of its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, Protocol

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .loader import MAX_PROFILE_BYTES, parse_profile

FORMAT: Final = "fleetroom-profile-bundle"
FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
SIGN_CONTEXT: Final = b"fleetroom-profile-bundle/1\n"
"""Prefixed to the signed bytes: a bundle signature is useless as anything else."""

# --- limits (each one named in the error it produces) ------------------------------
MAX_BUNDLE_BYTES: Final = 8 * 1024 * 1024
MAX_FILE_BYTES: Final = MAX_PROFILE_BYTES
MAX_TOTAL_BYTES: Final = 32 * 1024 * 1024
MAX_FILES: Final = 2000
MAX_MANIFEST_BYTES: Final = 1024 * 1024
MAX_RATIO: Final = 100
"""Uncompressed : compressed.  YAML deflates about 4:1; a zip bomb reaches 1000:1."""
_RATIO_FLOOR: Final = 64 * 1024
"""Below this size a high ratio is harmless (a file of blanks), so it is not judged."""
MAX_YAML_DEPTH: Final = 20
MAX_PATH_LENGTH: Final = 200
MAX_PATH_DEPTH: Final = 4
MAX_LIFETIME: Final = timedelta(days=366)
"""A server cannot sign a bundle that stays acceptable for years (no frozen bundle)."""
ALLOWED_SUFFIXES: Final = (".yaml", ".yml")

_EOCD = b"PK\x05\x06"
_EOCD_LEN = 22
_SIG_MAGIC = b"FRPB1 "
_SIG_LEN = len(_SIG_MAGIC) + 16 + 1 + 88
"""``FRPB1 <key id: 16 hex> <base64 of the 64-byte signature: 88 chars>``."""
_SIG_RE = re.compile(rb"^FRPB1 ([0-9a-f]{16}) ([A-Za-z0-9+/]{86}==)$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})
_ZIP_ENCRYPTED = 0x1
_DOS_DIRECTORY = 0x10

ErrorCode = Literal[
    "too-large", "malformed", "bad-signature", "wrong-key", "not-newer", "expired",
    "unsafe-path", "too-many-files", "bomb", "hash-mismatch", "unsafe-yaml",
    "invalid-profile",
]


class BundleError(ValueError):
    """The bundle is refused; ``code`` says which rule it broke, the message says
    what an administrator needs to know.  Messages never echo file content."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code


class _SignedMessage(Protocol):
    @property
    def signature(self) -> bytes: ...


class Verifier(Protocol):
    """An Ed25519 public key (``nacl.signing.VerifyKey`` fits)."""

    def verify(self, smessage: bytes, signature: bytes) -> bytes: ...

    def __bytes__(self) -> bytes: ...


class Signer(Protocol):
    """An Ed25519 private key (``nacl.signing.SigningKey`` fits)."""

    @property
    def verify_key(self) -> Verifier: ...

    def sign(self, message: bytes) -> _SignedMessage: ...


def key_id(key: Verifier) -> str:
    """Same formula as :func:`fleetroom_protocol.keys.key_id` (16 hex digits of SHA-256),
    repeated here so this package needs no dependency on the protocol package."""
    return hashlib.sha256(bytes(key)).hexdigest()[:16]


# --- the manifest -------------------------------------------------------------------


class ManifestFile(BaseModel):
    """One profile file: where it goes, how big it is, and its SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, max_length=MAX_PATH_LENGTH)
    size: int = Field(ge=0, le=MAX_FILE_BYTES)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """What the publisher promises about the bundle (covered by the signature)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["fleetroom-profile-bundle"]
    format_version: Literal[1]
    version: int = Field(ge=1, lt=2**53)
    """Strictly increasing per server; the agent never installs one not above its own."""
    created_at: AwareDatetime
    expires_at: AwareDatetime
    files: list[ManifestFile] = Field(max_length=MAX_FILES)


@dataclass(frozen=True)
class Bundle:
    """A bundle that passed every check of :func:`open_bundle`."""

    manifest: Manifest
    files: dict[str, bytes]
    """Path (as in the manifest) → content, hash-checked."""
    manifest_sha256: str
    key_id: str

    @property
    def version(self) -> int:
        """The bundle version."""
        return self.manifest.version


# --- paths ----------------------------------------------------------------------------


def check_path(path: str) -> None:
    """Raise unless ``path`` is a plain relative profile path safe on every OS."""
    shown = path.encode("unicode_escape", "replace").decode("ascii")[:80]
    if not path or len(path) > MAX_PATH_LENGTH:
        raise BundleError("unsafe-path", f"path {shown!r} is empty or longer than "
                                         f"{MAX_PATH_LENGTH} characters")
    if "\\" in path:
        raise BundleError("unsafe-path", f"path {shown!r} contains a backslash")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise BundleError("unsafe-path", f"path {shown!r} is absolute")
    parts = path.split("/")
    if any(p in ("..", ".") for p in parts):
        raise BundleError("unsafe-path", f"path {shown!r} leaves its directory (path traversal)")
    if len(parts) > MAX_PATH_DEPTH:
        raise BundleError("unsafe-path", f"path {shown!r} is nested deeper than "
                                         f"{MAX_PATH_DEPTH} levels")
    for part in parts:
        if not _SEGMENT_RE.match(part):
            raise BundleError("unsafe-path", f"path {shown!r}: only letters, digits, '.', '-' "
                                             "and '_' are allowed, starting with a letter or "
                                             "digit")
        if part.split(".")[0].upper() in _WINDOWS_DEVICES:
            raise BundleError("unsafe-path", f"path {shown!r} uses a reserved device name")
    if not path.endswith(ALLOWED_SUFFIXES):
        raise BundleError("unsafe-path", f"path {shown!r}: only "
                                         f"{', '.join(ALLOWED_SUFFIXES)} files are allowed")


def _check_file_set(paths: list[str]) -> None:
    if len(paths) > MAX_FILES:
        raise BundleError("too-many-files", f"{len(paths)} files; at most {MAX_FILES} allowed")
    seen: dict[str, str] = {}
    for p in paths:
        check_path(p)
        folded = p.casefold()
        if folded in seen:
            raise BundleError("unsafe-path", f"path {p!r} appears twice (case-insensitively: "
                                             f"{seen[folded]!r})")
        seen[folded] = p


# --- signing --------------------------------------------------------------------------


def sign_zip(unsigned_zip: bytes, signing_key: Signer) -> bytes:
    """Sign a zip that has no comment yet: the signature becomes its comment.

    The signed bytes are everything up to the comment, with the comment length
    already set — so the signature covers the whole zip directory as well.
    """
    if len(unsigned_zip) < _EOCD_LEN or unsigned_zip[-_EOCD_LEN:-_EOCD_LEN + 4] != _EOCD \
            or unsigned_zip[-2:] != b"\0\0":
        raise ValueError("sign_zip needs a zip file without a comment")
    body = unsigned_zip[:-2] + struct.pack("<H", _SIG_LEN)
    signature = signing_key.sign(SIGN_CONTEXT + body).signature
    comment = (_SIG_MAGIC + key_id(signing_key.verify_key).encode() + b" "
               + base64.b64encode(signature))
    if len(comment) != _SIG_LEN:
        raise ValueError("not an Ed25519 signature")
    return body + comment


def verify_signature(data: bytes, verify_key: Verifier) -> str:
    """Step one, before anything is parsed: the size cap and the signature.

    Returns the signer's key id.  Only the fixed-length trailer is looked at to
    find the signature; a truncated file loses its trailer and fails here.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError("too-large", f"bundle is {len(data)} bytes; at most "
                                       f"{MAX_BUNDLE_BYTES} allowed")
    trailer_start = len(data) - _SIG_LEN
    eocd = data[trailer_start - _EOCD_LEN:trailer_start]
    if (trailer_start - _EOCD_LEN < 0 or eocd[:4] != _EOCD
            or struct.unpack("<H", eocd[20:22])[0] != _SIG_LEN):
        raise BundleError("malformed", "not a signed profile bundle (signature trailer "
                                       "missing: truncated, or not a bundle at all)")
    found = _SIG_RE.match(data[trailer_start:])
    if found is None:
        raise BundleError("malformed", "signature trailer is not in the expected form")
    signer, expected = found.group(1).decode(), key_id(verify_key)
    if signer != expected:
        raise BundleError("wrong-key", f"bundle is signed by key {signer}, but this agent "
                                       f"trusts only the server key {expected}")
    try:
        signature = base64.b64decode(found.group(2), validate=True)
        verify_key.verify(SIGN_CONTEXT + data[:trailer_start], signature)
    except (binascii.Error, ValueError):
        raise BundleError("malformed", "signature is not valid base64") from None
    except Exception:  # nacl's BadSignatureError; any verifier failure means "not verified"
        raise BundleError("bad-signature", "signature does not verify: the file was altered "
                                           "after signing") from None
    return signer


# --- building -------------------------------------------------------------------------


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.create_system = 3
    return info


def build_bundle(files: Mapping[str, bytes], *, version: int, signing_key: Signer,
                 created_at: datetime, expires_at: datetime) -> bytes:
    """A signed bundle of ``files`` (path → content) that agents will accept.

    Enforces the same structural limits the agent does, so a publisher finds out
    at build time, not from a fleet of refusing agents.  Profile *content* is
    checked by :func:`check_profiles` (call it first).
    """
    paths = sorted(files)
    _check_file_set(paths)
    for p in paths:
        if len(files[p]) > MAX_FILE_BYTES:
            raise BundleError("too-large", f"{p}: {len(files[p])} bytes; at most "
                                           f"{MAX_FILE_BYTES} allowed per file")
    if sum(len(files[p]) for p in paths) > MAX_TOTAL_BYTES:
        raise BundleError("too-large", f"files total over {MAX_TOTAL_BYTES} bytes")
    manifest = Manifest(
        format=FORMAT, format_version=FORMAT_VERSION, version=version,
        created_at=created_at.astimezone(UTC), expires_at=expires_at.astimezone(UTC),
        files=[ManifestFile(path=p, size=len(files[p]),
                            sha256=hashlib.sha256(files[p]).hexdigest()) for p in paths])
    _check_lifetime(manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(_zip_info(MANIFEST_NAME), manifest.model_dump_json(indent=1).encode())
        for p in paths:
            zf.writestr(_zip_info(p), files[p])
    data = sign_zip(buffer.getvalue(), signing_key)
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError("too-large", f"bundle would be {len(data)} bytes; at most "
                                       f"{MAX_BUNDLE_BYTES} allowed")
    return data


def files_from_directory(directory: Path) -> dict[str, bytes]:
    """Every profile file under ``directory`` (path relative to it → bytes)."""
    out: dict[str, bytes] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_symlink():
            raise BundleError("unsafe-path", f"{p} is a symbolic link")
        if p.is_file() and p.suffix in ALLOWED_SUFFIXES:
            out[p.relative_to(directory).as_posix()] = p.read_bytes()
    return out


# --- opening --------------------------------------------------------------------------


def _check_lifetime(manifest: Manifest) -> None:
    if manifest.expires_at <= manifest.created_at:
        raise BundleError("malformed", "bundle expires before it was created")
    if manifest.expires_at - manifest.created_at > MAX_LIFETIME:
        raise BundleError("malformed", f"bundle is valid for more than {MAX_LIFETIME.days} "
                                       "days")


def check_freshness(manifest: Manifest, *, installed_version: int, now: datetime) -> None:
    """No rollback (strictly newer than what is installed) and not expired at ``now``.

    ``now`` is the caller's best trusted time; see the agent's ``profile_update``
    for how it is chosen so that a wrong local clock cannot decide alone.
    """
    if manifest.version == installed_version:
        raise BundleError("not-newer", f"bundle version {manifest.version} is already "
                                       "installed")
    if manifest.version < installed_version:
        raise BundleError("not-newer", f"bundle version {manifest.version} is older than "
                                       f"the installed version {installed_version} "
                                       "(rollback refused)")
    if now >= manifest.expires_at:
        raise BundleError("expired", f"bundle version {manifest.version} expired at "
                                     f"{manifest.expires_at:%Y-%m-%d %H:%M} UTC (time used: "
                                     f"{now.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")


def _entry_count(data: bytes) -> int:
    eocd = data[len(data) - _SIG_LEN - _EOCD_LEN:len(data) - _SIG_LEN]
    disk_entries, total_entries = struct.unpack("<HH", eocd[8:12])
    if disk_entries != total_entries or total_entries == 0xFFFF:
        raise BundleError("malformed", "multi-part or zip64 archives are not bundles")
    return int(total_entries)


def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename
    if name.endswith("/") or info.external_attr & _DOS_DIRECTORY:
        raise BundleError("unsafe-path", f"entry {name!r} is a directory; bundles hold files "
                                         "only")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BundleError("unsafe-path", f"entry {name!r} is a symbolic link")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        raise BundleError("unsafe-path", f"entry {name!r} is not a regular file")
    if info.flag_bits & _ZIP_ENCRYPTED:
        raise BundleError("malformed", f"entry {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError("malformed", f"entry {name!r} uses an unsupported compression")
    if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > _RATIO_FLOOR:
        raise BundleError("bomb", f"entry {name!r} would expand {info.file_size} bytes from "
                                  f"{info.compress_size} (ratio over {MAX_RATIO}:1: zip bomb)")
    limit = MAX_MANIFEST_BYTES if name == MANIFEST_NAME else MAX_FILE_BYTES
    if info.file_size > limit:
        raise BundleError("too-large", f"entry {name!r} is {info.file_size} bytes; at most "
                                       f"{limit} allowed")


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> bytes:
    """Exactly ``size`` bytes or an error; never decompresses more than ``size + 1``."""
    try:
        with zf.open(info) as fh:
            content = fh.read(size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError):
        raise BundleError("hash-mismatch", f"entry {info.filename!r} is corrupt") from None
    if len(content) != size:
        raise BundleError("hash-mismatch", f"entry {info.filename!r} is not the size the "
                                           "manifest says")
    return content


def open_bundle(data: bytes, verify_key: Verifier, *, installed_version: int,
                now: datetime) -> Bundle:
    """Verify and unpack a bundle in memory, or raise :class:`BundleError`.

    Order matters and each step bounds the next: size cap and signature; entry
    count from the fixed end record; every entry's name, type, size and ratio
    from the directory; the manifest (capped); version and expiry; the file
    set against the manifest; each file read with a cap and hashed.
    """
    signer = verify_signature(data, verify_key)
    if _entry_count(data) > MAX_FILES + 1:
        raise BundleError("too-many-files", f"bundle has more than {MAX_FILES} files")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise BundleError("malformed", "the zip directory is unreadable") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_FILES + 1:
            raise BundleError("too-many-files", f"bundle has more than {MAX_FILES} files")
        by_name: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            _check_entry(info)
            if info.filename != MANIFEST_NAME:
                check_path(info.filename)
            if info.filename in by_name:
                raise BundleError("unsafe-path", f"entry {info.filename!r} appears twice")
            by_name[info.filename] = info
        manifest_info = by_name.pop(MANIFEST_NAME, None)
        if manifest_info is None:
            raise BundleError("malformed", f"{MANIFEST_NAME} is missing")
        raw = _read(zf, manifest_info, manifest_info.file_size)
        manifest = _parse_manifest(raw)
        _check_lifetime(manifest)
        check_freshness(manifest, installed_version=installed_version, now=now)
        listed = [f.path for f in manifest.files]
        _check_file_set(listed)
        if sum(f.size for f in manifest.files) > MAX_TOTAL_BYTES:
            raise BundleError("too-large", f"files total over {MAX_TOTAL_BYTES} bytes")
        extra = sorted(set(by_name) - set(listed))
        if extra:
            raise BundleError("malformed", f"{extra[0]!r} is in the bundle but not in the "
                                           "manifest")
        missing = sorted(set(listed) - set(by_name))
        if missing:
            raise BundleError("malformed", f"{missing[0]!r} is listed in the manifest but "
                                           "missing")
        files: dict[str, bytes] = {}
        for entry in manifest.files:
            info = by_name[entry.path]
            if info.file_size != entry.size:
                raise BundleError("hash-mismatch", f"{entry.path}: size differs from the "
                                                   "manifest")
            content = _read(zf, info, entry.size)
            if hashlib.sha256(content).hexdigest() != entry.sha256:
                raise BundleError("hash-mismatch", f"{entry.path}: SHA-256 differs from the "
                                                   "manifest")
            files[entry.path] = content
    return Bundle(manifest=manifest, files=files,
                  manifest_sha256=hashlib.sha256(raw).hexdigest(), key_id=signer)


def _parse_manifest(raw: bytes) -> Manifest:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError("malformed", f"{MANIFEST_NAME} is not JSON") from None
    if isinstance(data, dict) and data.get("format") != FORMAT:
        raise BundleError("malformed", f"{MANIFEST_NAME}: not a {FORMAT}")
    if isinstance(data, dict) and data.get("format_version") != FORMAT_VERSION:
        raise BundleError("malformed", f"{MANIFEST_NAME}: format version "
                                       f"{str(data.get('format_version'))[:20]!r} is not "
                                       f"supported (this agent reads {FORMAT_VERSION})")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) or "manifest"
                                   for e in exc.errors()})[:10])
        raise BundleError("malformed", f"{MANIFEST_NAME} invalid ({fields})") from None


# --- content --------------------------------------------------------------------------


def check_yaml_safety(text: str, path: str) -> None:
    """Refuse anchors, aliases and deep nesting before any YAML is *composed*.

    Only the event stream is read (linear in the input, no object built), so a
    "billion laughs" file fails at its first anchor in microseconds.  Profiles
    never need anchors: inheritance is what ``extends`` is for.  Syntax errors
    are left to :func:`~fleetroom_profiles.loader.parse_profile`, which names
    the line.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent):
                raise BundleError("unsafe-yaml", f"{path}: YAML anchors and aliases are not "
                                                 "allowed (use 'extends')")
            if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
                raise BundleError("unsafe-yaml", f"{path}: YAML anchors and aliases are not "
                                                 "allowed (use 'extends')")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise BundleError("unsafe-yaml", f"{path}: nested deeper than "
                                                     f"{MAX_YAML_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return


def check_profiles(files: Mapping[str, bytes]) -> None:
    """Every file is UTF-8, YAML-safe and a valid profile; names are unique.

    References between profiles (``extends``, decoders) need the whole set the
    agent will run with; the agent checks them by loading the staged directory.
    """
    problems: list[str] = []
    names: dict[str, str] = {}
    for path in sorted(files):
        try:
            text = files[path].decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError("invalid-profile", f"{path}: not UTF-8 text") from None
        check_yaml_safety(text, path)
        profile, found = parse_profile(text, path)
        problems.extend(str(p) for p in found)
        if profile is not None:
            if profile.name in names:
                problems.append(f"{path}: profile name {profile.name!r} is also used by "
                                f"{names[profile.name]}")
            names[profile.name] = path
    if problems:
        shown = problems[:20] + ([f"… and {len(problems) - 20} more"]
                                 if len(problems) > 20 else [])
        raise BundleError("invalid-profile", "invalid profiles:\n" + "\n".join(shown))

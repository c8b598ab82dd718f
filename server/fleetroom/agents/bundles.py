"""Signed profile bundles on the server: publish, store, find the newest.

A bundle is one file (:mod:`fleetroom_profiles.bundle`) kept in
``<data_dir>/profile-bundles/profiles-<version>.zip`` — files, not rows: a
bundle is written once, read whole and served as is, and a plain file can be
copied to an agent that has no network path to the server
(``fleetroom-agent profiles import``).

Versions are strictly increasing.  A new file is written under a temporary name,
fsynced and *hard-linked* to its final name, which fails if the name exists:
two ``publish_profiles`` runs at once cannot both become version N — the loser
builds N+1.  Published content is validated exactly as an agent will validate it
(YAML safety, schema, ``extends`` and decoders resolved against the shipped set),
so a broken profile is refused here, not by a whole fleet.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from django.conf import settings
from fleetroom_profiles import ProfileError, ProfileSet, shipped_profile_dir
from fleetroom_profiles.bundle import (
    MAX_LIFETIME,
    BundleError,
    Signer,
    build_bundle,
    check_profiles,
    files_from_directory,
)

DIRNAME: Final = "profile-bundles"
DEFAULT_EXPIRES_DAYS: Final = 30
"""A month: long enough to survive holidays without a publish, short enough that a
stolen copy of an old bundle stops working soon.  Publish daily (cron or the
worker) and agents always hold a bundle weeks away from expiry."""
KEEP: Final = 10
"""Older bundles are deleted; agents only ever want the newest."""
_NAME: Final = re.compile(r"^profiles-(\d{10})\.zip$")
_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class StoredBundle:
    """One published bundle file."""

    version: int
    path: Path

    def read(self) -> bytes:
        """The bundle bytes exactly as signed."""
        return self.path.read_bytes()


def bundle_dir() -> Path:
    """Where published bundles are kept (inside the data directory)."""
    return Path(settings.DATA_DIR) / DIRNAME


def stored_bundles() -> list[StoredBundle]:
    """Every published bundle, oldest first."""
    directory = bundle_dir()
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file() and not entry.is_symlink():
            found.append(StoredBundle(int(match.group(1)), entry))
    return sorted(found, key=lambda b: b.version)


def latest_bundle() -> StoredBundle | None:
    """The newest published bundle, or ``None`` before the first publish."""
    bundles = stored_bundles()
    return bundles[-1] if bundles else None


def validate_source(source: Path) -> dict[str, bytes]:
    """The profile files of ``source``, checked as an agent will check them.

    Raises :class:`BundleError` with every problem found.
    """
    files = files_from_directory(source)
    if not files:
        raise BundleError("invalid-profile", f"no profile files in {source}")
    check_profiles(files)
    try:
        ProfileSet.load([source], include_shipped=source != shipped_profile_dir())
    except ProfileError as exc:
        raise BundleError("invalid-profile", "profiles do not load:\n"
                          + "\n".join(str(p) for p in exc.problems[:20])) from None
    return files


def publish(signing_key: Signer, *, expires_days: int = DEFAULT_EXPIRES_DAYS,
            source: Path | None = None, now: datetime | None = None) -> StoredBundle:
    """Build, sign and store the next bundle from ``source`` (default: the shipped
    profiles of this server release); return it.  Raises :class:`BundleError`."""
    if not 1 <= expires_days <= MAX_LIFETIME.days:
        raise BundleError("malformed", f"expiry must be 1 to {MAX_LIFETIME.days} days")
    files = validate_source(source or shipped_profile_dir())
    created = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    directory = bundle_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        latest = latest_bundle()
        version = (latest.version if latest else 0) + 1
        data = build_bundle(files, version=version, signing_key=signing_key,
                            created_at=created,
                            expires_at=created + timedelta(days=expires_days))
        final = directory / f"profiles-{version:010d}.zip"
        if _link_new(directory, final, data):
            _prune(directory)
            return StoredBundle(version, final)
    raise BundleError("malformed", "other publishers kept taking the next version; try again")


def _link_new(directory: Path, final: Path, data: bytes) -> bool:
    fd, tmp = tempfile.mkstemp(prefix=".publish-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # public content, signed; nothing secret inside
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    if os.name == "posix":
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return True


def _prune(directory: Path) -> None:
    for old in stored_bundles()[:-KEEP]:
        old.path.unlink(missing_ok=True)

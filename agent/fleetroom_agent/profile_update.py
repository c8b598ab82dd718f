"""Signed profile updates on the agent: fetch, verify, install atomically, roll back.

The server publishes signed profile bundles (:mod:`fleetroom_profiles.bundle`);
the agent fetches the newest one daily and on command (:func:`check_and_apply`)
or takes one by hand (:func:`import_bundle`, ``fleetroom-agent profiles import``).

Layout in the data directory::

    profiles/state.json          which bundle is active, which one came before it
    profiles/v0000000042/        the previous set (kept for rollback)
    profiles/v0000000043/        the active set: *.yaml plus manifest.json
    profiles/.staging-*/         a set being written (removed if left by a crash)

**Atomic swap.**  A new set is written to a staging directory, every file and
directory fsynced, validated with the real loader, renamed to ``v<version>``,
and only then does ``state.json`` (replaced with ``os.replace`` after an fsync)
point at it: the one commit point.  A crash before it leaves the old set
active; a crash after it leaves the new, complete set active.  A pointer file
rather than a symlink, because Windows services cannot count on symlinks.

**Rollback.**  After the commit the installed set is loaded again from its final
place; if that fails, ``state.json`` goes back to the old set.  At every load
(:func:`load_profiles`) the active set is checked against its manifest (hashes)
and loaded; if it fails — a damaged disk, or an agent upgrade whose loader no
longer accepts it — the previous set is used, then the shipped profiles, and
the reason is kept for ``profiles status``.  Local override directories load
after the bundle; if they alone are broken, the error is theirs and no bundle
is rolled back.

**Time.**  A bundle has an expiry so that nobody can keep feeding an agent an old
signed bundle forever.  Whose clock decides?  Not the agent's alone: a clock
stuck in the past would accept an expired bundle forever, a clock in the future
would refuse every bundle.  Online, the server's reply is a sealed envelope
answering *this* request (``reply_to`` = our fresh counter) and its signed
``ts`` is the time used — a fresh, authenticated server clock, whatever the
agent's clock says.  For a hand-imported file there is no server to ask, so the
time used is the later of the local clock and the newest server time the agent
has ever seen (``trusted_time``): a clock set back cannot go below what the
server already told us; a clock far ahead makes the import fail with an
"expired" message that shows the time used, so the operator sees why.  An
installed bundle past its expiry is still *used* (stale profiles beat none);
it is just never *accepted* again, and ``status`` says it is expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fleetroom_profiles import ProfileError, ProfileSet
from fleetroom_profiles.bundle import (
    MAX_BUNDLE_BYTES,
    Bundle,
    BundleError,
    Manifest,
    Verifier,
    check_path,
    check_profiles,
    open_bundle,
)
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from .identity import DATA_DIR_ENV, CounterStore, fsync_dir, write_private_file

if TYPE_CHECKING:
    import httpx

    from .identity import AgentIdentity

log = logging.getLogger(__name__)

PROFILES_DIRNAME: Final = "profiles"
STATE_FILENAME: Final = "state.json"
MANIFEST_COPY: Final = "manifest.json"
_LOCK_FILENAME: Final = ".lock"
_STAGING_PREFIX: Final = ".staging-"
_VERSION_DIR: Final = re.compile(r"^v\d{10}$")
_REPLY_OVERHEAD: Final = 8192
"""Envelope framing around the bundle in the server's reply."""
_POSIX: Final = os.name == "posix"


class ProfileUpdateError(Exception):
    """A profile update did not happen; the old profiles stay active.

    ``code``: a :class:`~fleetroom_profiles.bundle.BundleError` code when the
    bundle was refused, else ``network``, ``http``, ``refused`` (not authenticated),
    ``busy``, ``reply`` (the server's answer failed verification) or ``install``
    (the file system or the loader failed while installing).
    """

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class InstalledState(BaseModel):
    """``profiles/state.json``."""

    model_config = ConfigDict(extra="ignore")

    version: int = Field(default=0, ge=0)
    """Version of the active bundle; 0 = none (shipped profiles only)."""
    active: str | None = Field(default=None, pattern=r"^v\d{10}$")
    """Directory of the active set (a name, never a path: an edited file cannot point
    outside ``profiles/``)."""
    previous: str | None = Field(default=None, pattern=r"^v\d{10}$")
    previous_version: int | None = None
    manifest_sha256: str | None = None
    created_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    installed_at: AwareDatetime | None = None
    source: str = ""
    files: int = 0
    trusted_time: AwareDatetime | None = None
    """Newest server time seen in a verified, fresh reply (never goes down)."""
    last_check_at: AwareDatetime | None = None
    last_result: str = ""
    last_error: str | None = None


# ------------------------------------------------------------------------- files


def profiles_root(data_dir: str | os.PathLike[str]) -> Path:
    """Where installed bundles live inside the data directory."""
    return Path(data_dir) / PROFILES_DIRNAME


@contextlib.contextmanager
def _locked(root: Path, *, required: bool = True) -> Iterator[None]:
    """One installer at a time (the daily check and a manual import may meet).

    Readers (``required=False``) go on without the lock when they may not create
    it — e.g. ``scan`` run by another user: the pointer file is replaced
    atomically, so an unlocked reader still sees one complete set.
    """
    if not _POSIX:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield
        return
    import fcntl

    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(root / _LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        if required:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_state(data_dir: str | os.PathLike[str]) -> InstalledState:
    """The installed state; a missing or damaged file means "shipped profiles only"."""
    path = profiles_root(data_dir) / STATE_FILENAME
    try:
        return InstalledState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return InstalledState()
    except (OSError, ValidationError) as exc:
        log.error("%s is unreadable (%s); using the shipped profiles", path, exc)
        return InstalledState(last_error=f"{path} was unreadable; shipped profiles in use")


def _write_state(root: Path, state: InstalledState) -> None:
    write_private_file(root / STATE_FILENAME, state.model_dump_json(indent=1).encode())


def installed_version(data_dir: str | os.PathLike[str]) -> int:
    """Version of the active bundle (0: none; what the agent reports as
    ``AgentState.profiles_version`` and sends when asking for a newer one)."""
    return read_state(data_dir).version


def _write_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_tree(top: Path) -> None:
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        fsync_dir(Path(dirpath))


def _verify_installed(directory: Path) -> str | None:
    """``None`` when ``directory`` holds exactly its manifest's files, unchanged."""
    try:
        manifest = Manifest.model_validate_json((directory / MANIFEST_COPY).read_bytes())
    except (OSError, ValidationError) as exc:
        return f"{directory.name}: manifest unreadable ({type(exc).__name__})"
    listed = {f.path for f in manifest.files}
    for f in manifest.files:
        try:
            check_path(f.path)
        except BundleError as exc:
            return f"{directory.name}: {exc}"
        path = directory / f.path
        if path.is_symlink() or not path.is_file():
            return f"{directory.name}/{f.path} is missing or not a regular file"
        if hashlib.sha256(path.read_bytes()).hexdigest() != f.sha256:
            return f"{directory.name}/{f.path} was changed after installation"
    for path in directory.rglob("*"):
        rel = path.relative_to(directory).as_posix()
        if path.suffix in (".yaml", ".yml") and rel not in listed:
            return f"{directory.name}/{rel} is not part of the installed bundle"
    return None


def _prune(root: Path, keep: set[str]) -> None:
    for entry in root.iterdir():
        if entry.name in keep or not entry.is_dir() or entry.is_symlink():
            continue
        if entry.name.startswith(_STAGING_PREFIX) or _VERSION_DIR.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)


# ----------------------------------------------------------------------- loading


def _data_dir_or_env(data_dir: str | os.PathLike[str] | None) -> Path | None:
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else None


def load_profiles(data_dir: str | os.PathLike[str] | None,
                  extra_dirs: Sequence[Path] = ()) -> ProfileSet:
    """The profiles the agent works with: shipped, then the active bundle, then
    ``extra_dirs`` (local overrides, e.g. ``[profiles] dirs`` in agent.toml).

    ``data_dir=None`` means ``$FLEETROOM_AGENT_DATA_DIR`` (no bundle if unset).
    A bundle that fails to verify or load is rolled back (see the module
    docstring); a broken *local* directory raises :class:`ProfileError` as before.
    """
    directory = _data_dir_or_env(data_dir)
    extra = list(extra_dirs)
    if directory is None or not (profiles_root(directory) / STATE_FILENAME).exists():
        return ProfileSet.load(extra)
    root = profiles_root(directory)
    with _locked(root, required=False):
        state = read_state(directory)
        candidates = [(state.active, state.version),
                      (state.previous, state.previous_version or 0)]
        failures: list[str] = []
        for name, version in candidates:
            if name is None:
                continue
            problem = _verify_installed(root / name)
            if problem is None:
                try:
                    profiles = ProfileSet.load([root / name, *extra])
                except ProfileError as exc:
                    try:
                        ProfileSet.load(extra)
                    except ProfileError:
                        raise exc from None  # the local directories are broken, not the bundle
                    problem = f"bundle {version} does not load: {exc.problems[0]}"
            if problem is None:
                if failures:
                    _roll_back(root, state, to=(name, version), why="; ".join(failures))
                return profiles
            failures.append(problem)
            log.error("installed profile bundle %s unusable: %s", version, problem)
        if failures:
            _roll_back(root, state, to=None, why="; ".join(failures))
    return ProfileSet.load(extra)


def _roll_back(root: Path, state: InstalledState, *, to: tuple[str, int] | None,
               why: str) -> None:
    """Point ``state.json`` at an older set (or at none: shipped profiles)."""
    if to is None:
        new = state.model_copy(update={
            "version": 0, "active": None, "previous": None, "previous_version": None,
            "manifest_sha256": None, "created_at": None, "expires_at": None, "files": 0,
            "source": "shipped",
            "last_error": f"installed bundles unusable, shipped profiles in use: {why}"})
    else:
        previous_manifest = _manifest_of(root / to[0])
        new = state.model_copy(update={
            "version": to[1], "active": to[0], "previous": None, "previous_version": None,
            "manifest_sha256": None,
            "created_at": previous_manifest.created_at if previous_manifest else None,
            "expires_at": previous_manifest.expires_at if previous_manifest else None,
            "files": len(previous_manifest.files) if previous_manifest else 0,
            "last_error": f"rolled back to bundle {to[1]}: {why}"})
    try:
        _write_state(root, new)
    except OSError as exc:  # a reader without write access: roll back for this run only
        log.error("cannot record the rollback in %s: %s", root, exc)


def _manifest_of(directory: Path) -> Manifest | None:
    try:
        return Manifest.model_validate_json((directory / MANIFEST_COPY).read_bytes())
    except (OSError, ValidationError):
        return None


# ------------------------------------------------------------------------ install


def _as_update_error(exc: BundleError) -> ProfileUpdateError:
    return ProfileUpdateError(exc.code, f"profile bundle refused: {exc}")


def install_bundle(data: bytes, data_dir: str | os.PathLike[str], server_key: Verifier, *,
                   now: datetime, extra_dirs: Sequence[Path] = (), source: str = "") -> str:
    """Verify ``data`` (signature first) and make it the active profile set.

    ``now`` is the trusted time for the expiry check (see the module docstring).
    Raises :class:`ProfileUpdateError`; whatever happens, the old set stays
    active unless the new one is installed completely and loads.
    """
    root = profiles_root(data_dir)
    with _locked(root):
        state = read_state(data_dir)
        try:
            bundle = open_bundle(data, server_key, installed_version=state.version, now=now)
            check_profiles(bundle.files)
        except BundleError as exc:
            _note(root, state, error=_as_update_error(exc).message)
            raise _as_update_error(exc) from None
        try:
            final = _stage(root, bundle, state, list(extra_dirs))
        except ProfileUpdateError as exc:
            _note(root, state, error=exc.message)
            raise
        new = state.model_copy(update={
            "version": bundle.version, "active": final.name, "previous": state.active,
            "previous_version": state.version if state.active else None,
            "manifest_sha256": bundle.manifest_sha256,
            "created_at": bundle.manifest.created_at, "expires_at": bundle.manifest.expires_at,
            "installed_at": datetime.now(UTC), "source": source,
            "files": len(bundle.files),
            "last_result": f"installed bundle {bundle.version}", "last_error": None})
        _write_state(root, new)  # the commit point
        problem = _verify_installed(final)
        if problem is None:
            try:
                ProfileSet.load([final, *extra_dirs])
            except ProfileError as exc:
                problem = str(exc.problems[0])
        if problem is not None:
            _write_state(root, state.model_copy(update={
                "last_error": f"bundle {bundle.version} failed after installation, "
                              f"rolled back: {problem}"}))
            raise ProfileUpdateError("install", f"bundle {bundle.version} failed to load after "
                                                f"installation and was rolled back: {problem}")
        _prune(root, {n for n in (new.active, new.previous) if n})
    count = len(bundle.files)
    return (f"installed profile bundle {bundle.version} ({count} file{'s' * (count != 1)}, "
            f"expires {bundle.manifest.expires_at:%Y-%m-%d})")


def _stage(root: Path, bundle: Bundle, state: InstalledState, extra: list[Path]) -> Path:
    """Write, fsync and validate the new set; return its final (renamed) directory."""
    for entry in root.iterdir():
        if entry.name.startswith(_STAGING_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)  # left by a crash
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=root))
    try:
        for path, content in bundle.files.items():
            _write_file(staging.joinpath(*path.split("/")), content)
        _write_file(staging / MANIFEST_COPY, bundle.manifest.model_dump_json(indent=1).encode())
        _fsync_tree(staging)
        try:
            ProfileSet.load([staging, *extra])
        except ProfileError as exc:
            problems = [str(p).replace(str(staging) + os.sep, "") for p in exc.problems]
            raise ProfileUpdateError(
                "invalid-profile", "profile bundle refused: the profiles do not load:\n"
                + "\n".join(problems[:20])) from None
        final = root / f"v{bundle.version:010d}"
        if final.name in (state.active, state.previous):
            raise ProfileUpdateError("install", f"{final} is in use")  # version check forbids
        if final.exists():
            shutil.rmtree(final)  # a leftover of an attempt that crashed before its commit
        os.rename(staging, final)
        fsync_dir(root)
        return final
    except OSError as exc:
        raise ProfileUpdateError("install", f"cannot write the new profiles: {exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _note(root: Path, state: InstalledState, *, error: str | None = None,
          result: str | None = None, trusted_time: datetime | None = None) -> None:
    """Remember the outcome of a check for ``profiles status`` (best effort)."""
    update: dict[str, Any] = {"last_check_at": datetime.now(UTC), "last_error": error}
    if result is not None:
        update["last_result"] = result
    if trusted_time is not None and (state.trusted_time is None
                                     or trusted_time > state.trusted_time):
        update["trusted_time"] = trusted_time
    try:
        _write_state(root, state.model_copy(update=update))
    except OSError as exc:
        log.error("cannot record the profile check: %s", exc)


def import_bundle(path: str | os.PathLike[str], data_dir: str | os.PathLike[str],
                  server_key: Verifier, *, extra_dirs: Sequence[Path] = (),
                  now: datetime | None = None) -> str:
    """Install a bundle file by hand (``fleetroom-agent profiles import FILE``).

    The time for the expiry check is the later of the local clock (or ``now``)
    and the newest server time the agent has seen.
    """
    file = Path(path)
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise ProfileUpdateError("install", f"cannot read {file}: {exc.strerror}") from None
    local = now or datetime.now(UTC)
    trusted = read_state(data_dir).trusted_time
    when = max(local, trusted) if trusted is not None else local
    return install_bundle(data, data_dir, server_key, now=when, extra_dirs=extra_dirs,
                          source=f"file {file.name}")


# --------------------------------------------------------------------------- fetch


async def fetch_bundle(identity: AgentIdentity, *, installed: int, counter: CounterStore,
                       client: httpx.AsyncClient) -> tuple[bytes, datetime] | None:
    """Ask the server for a bundle newer than ``installed``.

    The request is a sealed ``poll`` envelope (the agent's signature and a fresh
    counter authenticate it; ``state.profiles_version`` says what we have), POSTed
    to :data:`PATH_PROFILES`.  ``204``/``304``: nothing newer.  ``200``: a sealed
    ``reply`` envelope answering this very request whose body is the bundle;
    returns the bundle and the server's signed time.
    """
    import httpx
    from fleetroom_protocol.envelope import SERVER, EnvelopeError, body_bytes, seal, split, verify
    from fleetroom_protocol.messages import CONTENT_TYPE, PATH_PROFILES, AgentState, PollBody

    from .transports.https import normalise_server_url, parse_retry_after, translate_error

    ctr = await asyncio.to_thread(counter.next)
    envelope = seal(PollBody(state=AgentState(profiles_version=installed)),
                    signing_key=identity.signing_key, sender=identity.agent_id, to=SERVER,
                    ctr=ctr, kind="poll")
    url = httpx.URL(normalise_server_url(identity.server_url) + PATH_PROFILES)
    host = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    cap = MAX_BUNDLE_BYTES + _REPLY_OVERHEAD
    try:
        async with client.stream("POST", url, content=envelope, headers={
                "content-type": CONTENT_TYPE, "accept": CONTENT_TYPE}) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise ProfileUpdateError("too-large", f"{host}: reply larger than {cap} "
                                                          "bytes")
            status, headers = response.status_code, response.headers
    except httpx.HTTPError as exc:
        err = translate_error(exc, host)
        raise ProfileUpdateError("network", err.message) from None
    if status in (204, 304):
        return None
    if status in (401, 403):
        raise ProfileUpdateError("refused", f"{host}: the server refused this agent (HTTP "
                                            f"{status}): not enrolled, suspended or revoked")
    if status in (429, 503):
        wait = parse_retry_after(headers.get("retry-after"), server_date=headers.get("date"))
        raise ProfileUpdateError("busy", f"{host}: server busy (HTTP {status})", wait)
    if status != 200:
        raise ProfileUpdateError("http", f"{host}: HTTP {status} from {PATH_PROFILES}")
    try:
        sealed = split(bytes(body), max_bytes=cap)
        verify(sealed, identity.server_verify_key)
        header = sealed.header
        if (header.sender, header.to, header.kind, header.reply_to) != (
                SERVER, identity.agent_id, "reply", ctr):
            raise ProfileUpdateError("reply", f"{host}: the reply does not answer this "
                                              "request (wrong sender, recipient or counter)")
        data = body_bytes(sealed, max_bytes=MAX_BUNDLE_BYTES)
    except EnvelopeError as exc:
        raise ProfileUpdateError("reply", f"{host}: the server's reply is not valid: "
                                          f"{exc}") from None
    ts = header.ts if header.ts.tzinfo is not None else header.ts.replace(tzinfo=UTC)
    return data, ts


async def check_and_apply(identity: AgentIdentity, data_dir: str | os.PathLike[str], *,
                          extra_dirs: Sequence[Path] = (), counter: CounterStore | None = None,
                          client: httpx.AsyncClient | None = None) -> str:
    """Fetch and install a newer bundle if the server has one; say what happened.

    For the runtime's daily check and the ``update-profiles`` command.  Pass the
    runtime's own ``counter`` (one :class:`CounterStore` per process keeps the
    server's replay window happy); without one a one-number block is reserved.
    ``client`` defaults to one built from the identity's CA file, pins and proxy.
    After a success, load the profiles again with :func:`load_profiles`.
    Raises :class:`ProfileUpdateError` (the old profiles stay active).
    """
    root = profiles_root(data_dir)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = read_state(data_dir)
    own_client = client is None
    if client is None:
        from .transports.https import make_client
        from .transports.tls import build_ssl_context

        try:
            ctx = build_ssl_context(ca_file=identity.ca_file, pins=identity.pins)
        except ValueError as exc:
            raise ProfileUpdateError("network", str(exc)) from None
        client = make_client(ctx, proxy=identity.proxy)
    try:
        fetched = await fetch_bundle(identity, installed=state.version,
                                     counter=counter or CounterStore(data_dir, block=1),
                                     client=client)
    except ProfileUpdateError as exc:
        await asyncio.to_thread(_locked_note, root, data_dir, exc.message, None, None)
        raise
    finally:
        if own_client:
            await client.aclose()
    if fetched is None:
        result = f"profiles are up to date (bundle {state.version})"
        await asyncio.to_thread(_locked_note, root, data_dir, None, result, None)
        return result
    data, server_time = fetched
    await asyncio.to_thread(_locked_note, root, data_dir, None, None, server_time)
    return await asyncio.to_thread(install_bundle, data, data_dir, identity.server_verify_key,
                                   now=server_time, extra_dirs=extra_dirs, source="server")


def _locked_note(root: Path, data_dir: str | os.PathLike[str], error: str | None,
                 result: str | None, trusted_time: datetime | None) -> None:
    with _locked(root):
        _note(root, read_state(data_dir), error=error, result=result,
              trusted_time=trusted_time)


# -------------------------------------------------------------------------- status


def status(data_dir: str | os.PathLike[str], *, now: datetime | None = None) -> dict[str, Any]:
    """What ``profiles status`` (and the runtime's ``status --json``) shows."""
    state = read_state(data_dir)
    local = now or datetime.now(UTC)
    when = max(local, state.trusted_time) if state.trusted_time else local
    doc: dict[str, Any] = json.loads(state.model_dump_json())
    doc["expired"] = bool(state.expires_at and when >= state.expires_at)
    doc["directory"] = str(profiles_root(data_dir) / state.active) if state.active else None
    return doc

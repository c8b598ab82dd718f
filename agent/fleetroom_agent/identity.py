"""Who this agent is: its keys, its server, and a message counter that never repeats.

The identity is written once by ``fleetroom-agent enroll`` into the agent's data
directory (``identity.json``) and read by every later start.  It holds the
agent's two private keys, so:

* it is created with mode 0600 *atomically* (written to a temporary file opened
  0600, fsynced, then renamed over the old one): there is no moment when the
  keys sit in a file anyone else may read, and a crash never leaves half a file;
* loading refuses a key file that group or others can read, with an error that
  says how to fix it, rather than silently using keys that may have leaked.

:class:`CounterStore` hands out the envelope counter (``Header.ctr``).  The server
rejects a counter it has seen before (anti-replay, :mod:`fleetroom_protocol.replay`)
and counts such rejections towards suspending the agent, so a counter must never
be reused — not after a restart, not after kill -9, not after a power cut — and
it must not depend on the wall clock, which may be wrong.  It reserves blocks:
before any value of a block is used, the block's end is written and fsynced;
after a crash the agent continues above the stored end.  At most one block of
numbers is skipped per crash, which the server's window tolerates.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from fleetroom_protocol.keys import (
    decode_private_key,
    decode_public_key,
    decode_signing_key,
    decode_verify_key,
    encode_key,
)
from fleetroom_protocol.messages import EnrollResponse, MqttSettings, Schedule
from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

IDENTITY_FILENAME: Final = "identity.json"
COUNTER_FILENAME: Final = "envelope-counter"
DATA_DIR_ENV: Final = "FLEETROOM_AGENT_DATA_DIR"
_POSIX: Final = os.name == "posix"
_MAX_CTR: Final = 2**63 - 1


class IdentityError(RuntimeError):
    """The identity is missing, unreadable, unsafe or invalid; the message says why."""


# --------------------------------------------------------------------- file helpers


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX only; Windows has no directory fsync)."""
    if not _POSIX:
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable and writable by the owner only.

    The temporary file is created 0600 with ``O_EXCL`` (never through a symlink an
    attacker planted), so the secret is never on disk with wider permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if _POSIX:
            os.fchmod(fd, 0o600)  # mkstemp already uses 0600; be explicit about it
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def check_private_file(path: Path) -> None:
    """Refuse a secret file that others can read or that belongs to someone else."""
    if not _POSIX:
        return  # NTFS ACLs: the data directory of the service account protects it
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        msg = (f"{path} is accessible by group or others (mode "
               f"{stat.S_IMODE(st.st_mode):04o}); it holds the agent's private keys. "
               f"Check who may have copied it, then run: chmod 600 {path}")
        raise IdentityError(msg)
    if st.st_uid != os.geteuid():
        msg = f"{path} belongs to another user (uid {st.st_uid}); refusing to use its keys"
        raise IdentityError(msg)


# ------------------------------------------------------------------------ identity


class _IdentityFile(BaseModel):
    """The on-disk format (version 1); strict so a typo'd edit is an error, not a guess."""

    model_config = ConfigDict(extra="forbid")

    format: int = Field(default=1, ge=1, le=1)
    agent_id: str = Field(min_length=1, max_length=64)
    server_url: str
    tenant: str
    site: str | None = None
    signing_key: str
    encryption_key: str
    server_signing_key: str
    server_encryption_key: str
    schedule: Schedule = Field(default_factory=Schedule)
    mqtt: MqttSettings | None = None
    mail_to: str | None = None
    ca_file: str | None = None
    pins: list[str] = Field(default_factory=list)
    proxy: str | None = None
    enrolled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Everything the agent needs to talk to its server (keys included).

    ``data_dir`` is where it was loaded from or saved to (not stored in the file),
    so the runtime can find the counter and outbox next to it.
    """

    agent_id: str
    server_url: str
    signing_key: SigningKey
    encryption_key: PrivateKey
    server_verify_key: VerifyKey
    server_public_key: PublicKey
    tenant: str
    site: str | None = None
    schedule: Schedule = field(default_factory=Schedule)
    mqtt: MqttSettings | None = None
    mail_to: str | None = None
    ca_file: str | None = None
    """PEM bundle of CAs to trust instead of the system store (private PKI)."""
    pins: tuple[str, ...] = ()
    """``sha256:<base64>`` pins of the server's public key; see transports.https."""
    proxy: str | None = None
    enrolled_at: datetime | None = None
    data_dir: Path | None = field(default=None, compare=False)

    @classmethod
    def from_enrollment(cls, response: EnrollResponse, *, server_url: str,
                        signing_key: SigningKey, encryption_key: PrivateKey,
                        ca_file: str | None = None, pins: tuple[str, ...] = (),
                        proxy: str | None = None) -> AgentIdentity:
        """The identity made from the server's answer and the locally made keys."""
        try:
            verify_key = decode_verify_key(response.server_signing_key)
            public_key = decode_public_key(response.server_encryption_key)
        except ValueError as exc:
            msg = f"the server sent an unusable key: {exc}"
            raise IdentityError(msg) from None
        return cls(agent_id=response.agent_id, server_url=server_url,
                   signing_key=signing_key, encryption_key=encryption_key,
                   server_verify_key=verify_key, server_public_key=public_key,
                   tenant=response.tenant, site=response.site, schedule=response.schedule,
                   mqtt=response.mqtt, mail_to=response.mail_to, ca_file=ca_file,
                   pins=pins, proxy=proxy, enrolled_at=datetime.now(UTC))

    @staticmethod
    def path_in(data_dir: str | os.PathLike[str]) -> Path:
        """Where the identity file lives in ``data_dir``."""
        return Path(data_dir) / IDENTITY_FILENAME

    @classmethod
    def exists(cls, data_dir: str | os.PathLike[str]) -> bool:
        """Whether ``data_dir`` already holds an identity (enrolled or not loadable)."""
        return cls.path_in(data_dir).exists()

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str]) -> AgentIdentity:
        """Read and check the identity; :class:`IdentityError` says what is wrong."""
        path = cls.path_in(data_dir)
        try:
            check_private_file(path)
            raw = path.read_bytes()
        except FileNotFoundError:
            msg = (f"no identity in {Path(data_dir)}: enroll first with "
                   "'fleetroom-agent enroll --server URL --token TOKEN'")
            raise IdentityError(msg) from None
        except PermissionError as exc:
            msg = f"cannot read {path}: {exc.strerror}"
            raise IdentityError(msg) from None
        try:
            doc = _IdentityFile.model_validate_json(raw)
        except ValidationError as exc:
            fields = ", ".join(sorted({".".join(map(str, e["loc"])) or "file"
                                       for e in exc.errors()}))
            msg = f"{path} is not a valid identity file (problem in: {fields})"
            raise IdentityError(msg) from None
        try:
            return cls(agent_id=doc.agent_id, server_url=doc.server_url,
                       signing_key=decode_signing_key(doc.signing_key),
                       encryption_key=decode_private_key(doc.encryption_key),
                       server_verify_key=decode_verify_key(doc.server_signing_key),
                       server_public_key=decode_public_key(doc.server_encryption_key),
                       tenant=doc.tenant, site=doc.site, schedule=doc.schedule,
                       mqtt=doc.mqtt, mail_to=doc.mail_to, ca_file=doc.ca_file,
                       pins=tuple(doc.pins), proxy=doc.proxy, enrolled_at=doc.enrolled_at,
                       data_dir=Path(data_dir))
        except ValueError as exc:
            msg = f"{path} holds an invalid key: {exc}"
            raise IdentityError(msg) from None

    def to_json(self) -> bytes:
        """The file content (includes the private keys)."""
        doc = _IdentityFile(
            agent_id=self.agent_id, server_url=self.server_url, tenant=self.tenant,
            site=self.site, signing_key=encode_key(self.signing_key),
            encryption_key=encode_key(self.encryption_key),
            server_signing_key=encode_key(self.server_verify_key),
            server_encryption_key=encode_key(self.server_public_key),
            schedule=self.schedule, mqtt=self.mqtt, mail_to=self.mail_to,
            ca_file=self.ca_file, pins=list(self.pins), proxy=self.proxy,
            enrolled_at=self.enrolled_at)
        return json.dumps(json.loads(doc.model_dump_json()), indent=2).encode() + b"\n"

    def save(self, data_dir: str | os.PathLike[str]) -> AgentIdentity:
        """Write atomically with mode 0600; return the identity bound to ``data_dir``."""
        directory = Path(data_dir)
        write_private_file(self.path_in(directory), self.to_json())
        return replace(self, data_dir=directory)

    def with_schedule(self, schedule: Schedule) -> AgentIdentity:
        """A copy with the server's new schedule (call :meth:`save` to keep it)."""
        return replace(self, schedule=schedule)


# ------------------------------------------------------------------------- counter


class CounterStore:
    """Envelope counters that never repeat, even across kill -9 and power cuts.

    Values are reserved in blocks of ``block`` numbers: the end of the block is
    fsynced to ``envelope-counter`` *before* the first value of the block is handed
    out, so every value ever used is below the stored mark and a restart continues
    from the mark.  An exclusive file lock makes concurrent processes (``run``
    next to a one-off CLI command) reserve disjoint blocks.  Thread-safe.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, block: int = 1000) -> None:
        if block < 1:
            msg = "block must be at least 1"
            raise ValueError(msg)
        self.path = Path(data_dir) / COUNTER_FILENAME
        self.block = block
        self._lock = threading.Lock()
        self._next = 0
        self._limit = 0  # nothing reserved yet: the first next() reserves

    def _read_mark(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        try:
            mark = int(text)
        except ValueError:
            msg = (f"{self.path} is damaged ({text[:40]!r}); it guards against reusing "
                   "message counters, so it is not reset automatically. Re-enroll the "
                   "agent (fleetroom-agent enroll --force) to start a fresh counter.")
            raise IdentityError(msg) from None
        if not 0 <= mark <= _MAX_CTR:
            msg = f"{self.path} holds an out-of-range mark {mark}"
            raise IdentityError(msg)
        return mark

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _POSIX:
            yield
            return
        import fcntl

        fd = os.open(self.path.with_name(self.path.name + ".lock"),
                     os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _reserve(self) -> None:
        with self._file_lock():
            start = max(self._read_mark(), self._limit)
            limit = start + self.block
            if limit > _MAX_CTR:
                msg = "envelope counter exhausted; re-enroll the agent"
                raise IdentityError(msg)
            write_private_file(self.path, f"{limit}\n".encode("ascii"))
        self._next, self._limit = start, limit

    def next(self) -> int:
        """A counter value never returned before by any process on this data directory."""
        with self._lock:
            if self._next >= self._limit:
                self._reserve()
            value = self._next
            self._next += 1
            return value

    def peek_mark(self) -> int:
        """The stored high-water mark (diagnostics; every used value is below it)."""
        return self._read_mark()

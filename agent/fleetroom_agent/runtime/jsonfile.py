"""Small JSON files in the data directory, written atomically and privately.

The runtime keeps its few facts (schedule, executed command ids, known devices,
the state ``status`` shows) in one file each.  Written to a temporary file,
fsynced and renamed, so a kill -9 or a power cut leaves either the old or the new
content — never half of each — and a reader in another process never sees a torn
file.  Mode 0600: these files name devices and networks of the customer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically, mode 0600.

    ``durable=False`` skips the fsync: for a file rewritten every few seconds whose
    content is only informational (``state.json``), the rename alone keeps readers
    from ever seeing a torn file, and a power cut costs at most one rewrite.
    """
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if os.name == "posix":
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any | None:
    """The file's JSON, or ``None`` when it is missing or unreadable.

    A damaged file is moved aside (``.bad``) and logged rather than crashing the
    agent at every start: these files hold conveniences, the outbox holds the data.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read %s: %s", path, exc)
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        bad = path.with_name(path.name + ".bad")
        log.error("%s is damaged (%s); moved to %s and starting afresh", path, exc, bad)
        with contextlib.suppress(OSError):
            os.replace(path, bad)
        return None

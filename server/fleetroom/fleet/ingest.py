"""Readings from files and streams: the thin edge in front of the ingest service.

This module only turns bytes into validated protocol readings and hands them to
:func:`fleetroom.fleet.services.ingest_readings`; it decides nothing about
devices.  A bad line — too long, not JSON, another schema, a value the protocol
refuses, a reading the service rejects — is reported with its line number and
skipped; every other line is still stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fleetroom_protocol import SCHEMA_V1, Reading
from pydantic import ValidationError

from fleetroom.tenancy.models import Tenant

from .services import DEFAULT_BATCH, IngestResult, ingest_readings

MAX_LINE_BYTES = 1 << 20
"""A reading is a few kilobytes; a line longer than 1 MiB is refused unread."""
_MAX_MESSAGE = 300
_SCHEMA_RE = re.compile(rb'"schema"\s*:\s*"([^"]{0,80})"')


class LineError(ValueError):
    """One input line could not be turned into a reading; the message says why."""


@dataclass
class ImportReport:
    """What an import did, with every rejected line."""

    lines: int = 0
    readings: int = 0
    duplicates: int = 0
    new_devices: int = 0
    updated_devices: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The counts (for ``--json`` and logs)."""
        return {"lines": self.lines, "readings": self.readings,
                "duplicates": self.duplicates, "new_devices": self.new_devices,
                "updated_devices": self.updated_devices, "errors": len(self.errors),
                "warnings": len(self.warnings)}


def iter_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES,
               ) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, content)`` per line; content ``None`` for a line over ``limit``
    bytes, which is skipped without ever being held in memory whole."""
    number = 0
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > limit and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):  # drain the rest of the line
                chunk = stream.readline(1 << 16)
            yield number, None
            continue
        yield number, chunk


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 1] + "…"


def parse_line(raw: bytes) -> Reading:
    """One JSON line → a validated reading, or :class:`LineError` saying why not.

    Messages name the field and the rule, never echo the (possibly hostile) input.
    """
    try:
        return Reading.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            detail = str(errors[0]["msg"]).removeprefix("Invalid JSON: ")
            raise LineError(_short(f"invalid JSON: {detail}")) from None
        for e in errors:
            if e["loc"] == ("schema",):
                m = _SCHEMA_RE.search(raw)
                found = m.group(1).decode("utf-8", "replace") if m else "?"
                raise LineError(_short(f"unsupported schema {found!r} (this server reads "
                                       f"{SCHEMA_V1})")) from None
        if errors and errors[0]["type"] == "model_type":
            raise LineError("not a reading: expected a JSON object") from None
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(reading)'}: {e['msg']}"
                 for e in errors[:3]]
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise LineError(_short("invalid reading: " + "; ".join(parts) + more)) from None


def import_stream(stream: BinaryIO, *, tenant: Tenant, agent_id: int | None = None,
                  acting_user: Any = None, batch_size: int = DEFAULT_BATCH) -> ImportReport:
    """Validate and ingest every line of ``stream`` (``scan --json`` output).

    Readings are ingested in batches of ``batch_size`` as they are parsed, so
    memory stays flat for any file size; each batch is its own transaction, and a
    re-run after an interruption only adds what is missing (duplicates are skipped).
    """
    report = ImportReport()
    line_of: list[int] = []

    def readings() -> Iterator[Reading]:
        for number, raw in iter_lines(stream):
            report.lines += 1
            if raw is None:
                report.errors.append((number, f"line longer than {MAX_LINE_BYTES} bytes; "
                                              "skipped"))
                continue
            if not raw.strip():
                report.lines -= 1  # blank lines are not readings
                continue
            try:
                reading = parse_line(raw)
            except LineError as exc:
                report.errors.append((number, str(exc)))
                continue
            line_of.append(number)
            yield reading

    def on_result(position: int, result: IngestResult) -> None:
        number = line_of[position]
        if result.outcome == "rejected":
            report.errors.append((number, _short(f"not stored: {result.error}")))
        report.warnings.extend((number, w) for w in result.warnings)

    summary = ingest_readings(readings(), tenant=tenant, agent_id=agent_id,
                              acting_user=acting_user, batch_size=batch_size,
                              on_result=on_result)
    report.readings = summary.stored
    report.duplicates = summary.duplicates
    report.new_devices = summary.new_devices
    report.updated_devices = summary.updated_devices
    report.errors.sort()
    return report


class TenantNotFound(LookupError):
    """The ``--tenant`` argument names no tenant (or names several)."""


def resolve_tenant(spec: str) -> Tenant:
    """A tenant by id (``12``), by materialised path (``/1/5/12/``) or by names from
    the top (``Operator/Dealer/Customer/Site``; the operator may be left out)."""
    spec = spec.strip()
    if spec.isdigit():
        found = Tenant.objects.filter(pk=int(spec)).first()
    elif re.fullmatch(r"(/\d+)+/", spec):
        found = Tenant.objects.filter(path=spec).first()
    else:
        names = [n.strip() for n in spec.strip("/").split("/") if n.strip()]
        if not names:
            raise TenantNotFound("empty tenant name")
        candidates = list(Tenant.objects.filter(name=names[0], depth__lte=1))
        for name in names[1:]:
            candidates = list(Tenant.objects.filter(parent__in=candidates, name=name))
        if len(candidates) > 1:
            raise TenantNotFound(f"{spec!r} is ambiguous; use the tenant id")
        found = candidates[0] if candidates else None
    if found is None:
        raise TenantNotFound(f"no tenant {spec!r}")
    return found

"""Audit log: :func:`record` inside every write service, :func:`verify_chain` to check it.

Usage, inside a ``do_<verb>`` service's transaction::

    audit.record("tenant.renamed", tenant=t, actor=acting_user, target=t,
                 data={"old_name": old, "new_name": t.name}, request=request)

* ``action`` is a dotted lower-case name (``<area>.<event>``).  Register a
  pydantic model for it with :func:`register_action` and ``data`` is validated
  against it (unknown keys refused); unregistered actions still get a generic
  check that ``data`` is plain JSON.  Floats are refused in both cases: a float
  does not survive a PostgreSQL ``jsonb`` round trip byte-for-byte, and the hash
  must.  Use strings or integers (e.g. per-mille) instead.
* ``tenant`` picks the chain and who may read the row
  (``AuditEvent.objects.for_user(user, Permission.VIEW_AUDIT)``); ``None`` is the
  platform chain, visible to operator administrators only.
* ``actor`` is the acting user, :data:`~fleetroom.core.scoping.SYSTEM` or ``None``.

Chain integrity under concurrency: appending locks the chain's head row
(``SELECT ... FOR UPDATE`` on PostgreSQL); on SQLite the settings open every
transaction with ``BEGIN IMMEDIATE``, which takes the database write lock at
the start, so two appenders queue instead of both reading the same head.
Because the lock is held to the end of the surrounding transaction, a service
should write to one chain per transaction (two services locking two chains in
opposite order could deadlock on PostgreSQL, which would abort one of them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Max
from django.http import HttpRequest
from django.utils import timezone
from pydantic import BaseModel

from fleetroom.core.models import GENESIS_HASH, PLATFORM_CHAIN, AuditChainHead, AuditEvent
from fleetroom.core.scoping import SYSTEM

if TYPE_CHECKING:
    from fleetroom.tenancy.models import Tenant

HASH_VERSION = 1
ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

_SCHEMAS: dict[str, type[BaseModel]] = {}


def register_action(action: str, schema: type[BaseModel]) -> None:
    """Declare the pydantic model that ``data`` of ``action`` must match.

    Call it from the owning app's ``AppConfig.ready()``.  Registering the same
    action twice with different models is a programming error.
    """
    if not ACTION_RE.match(action):
        raise ValueError(f"audit action {action!r} must be dotted lower-case, e.g. 'tenant.moved'")
    existing = _SCHEMAS.get(action)
    if existing is not None and existing is not schema:
        raise ValueError(f"audit action {action!r} is already registered to {existing.__name__}")
    _SCHEMAS[action] = schema


def registered_actions() -> dict[str, type[BaseModel]]:
    """The registered actions and their data models (for docs and tests)."""
    return dict(_SCHEMAS)


def _check_plain_json(value: Any, where: str = "data") -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        raise TypeError(f"{where}: floats are not allowed in audit data (use str or int)")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings")
            _check_plain_json(item, f"{where}.{k}")
        return
    raise TypeError(f"{where}: {type(value).__name__} is not plain JSON")


def _clean_data(action: str, data: Mapping[str, Any] | BaseModel | None) -> dict[str, Any]:
    schema = _SCHEMAS.get(action)
    if isinstance(data, BaseModel):
        if schema is not None and not isinstance(data, schema):
            raise TypeError(f"audit data for {action!r} must be a {schema.__name__}")
        out = data.model_dump(mode="json")
    elif schema is not None:
        out = schema.model_validate(dict(data or {})).model_dump(mode="json")
    else:
        out = dict(data or {})
    _check_plain_json(out)
    # Store exactly what is hashed: the canonical JSON round trip.
    loaded: dict[str, Any] = json.loads(canonical_json(out))
    return loaded


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text, no NaN: the bytes that get hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(*, chain: str, seq: int, tenant_id: int | None, actor_id: int | None,
               actor_label: str, action: str, target_type: str, target_id: str,
               data: Any, ip: str | None, created_at: datetime, prev_hash: str) -> str:
    """SHA-256 over the canonical JSON of a row's content and the previous hash."""
    payload = {
        "v": HASH_VERSION, "chain": chain, "seq": seq, "tenant": tenant_id, "actor": actor_id,
        "actor_label": actor_label, "action": action, "target_type": target_type,
        "target_id": target_id, "data": data, "ip": ip, "created_at": _iso(created_at),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def _row_hash(ev: AuditEvent) -> str:
    return event_hash(chain=ev.chain, seq=ev.seq, tenant_id=ev.tenant_id, actor_id=ev.actor_id,
                      actor_label=ev.actor_label, action=ev.action,
                      target_type=ev.target_type, target_id=ev.target_id, data=ev.data,
                      ip=ev.ip, created_at=ev.created_at, prev_hash=ev.prev_hash)


def chain_key(tenant: Tenant | int | None) -> str:
    """The chain a tenant's events go to (``platform`` for none)."""
    if tenant is None:
        return PLATFORM_CHAIN
    return f"tenant:{tenant if isinstance(tenant, int) else tenant.pk}"


def normalise_ip(value: str | None) -> str | None:
    """Compressed canonical text of an address, or ``None`` when it is not one."""
    if not value:
        return None
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.compressed


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or the proxy-appended last
    ``X-Forwarded-For`` entry when ``[security] trusted_proxies`` is on."""
    if request is None:
        return None
    cfg = getattr(settings, "CONFIG", None)
    if cfg is not None and cfg.security.trusted_proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return normalise_ip(forwarded.split(",")[-1])
    return normalise_ip(request.META.get("REMOTE_ADDR"))


def _target(target: models.Model | tuple[str, str | int] | None) -> tuple[str, str]:
    if target is None:
        return "", ""
    if isinstance(target, models.Model):
        return target._meta.label_lower, str(target.pk)
    return target[0], str(target[1])


def _actor(actor: Any) -> tuple[int | None, str]:
    if actor is None or actor is SYSTEM:
        return None, "system" if actor is SYSTEM else ""
    if not getattr(actor, "is_authenticated", False):
        return None, ""
    return int(actor.pk), str(actor.get_username())[:150]


def _lock_head(key: str) -> AuditChainHead:
    """The chain head, locked for this transaction (created on first use)."""
    head = AuditChainHead.objects.select_for_update().filter(key=key).first()
    if head is not None:
        return head
    try:
        with transaction.atomic():
            AuditChainHead.objects.create(key=key)
    except IntegrityError:
        pass  # a concurrent first event created it; lock theirs
    return AuditChainHead.objects.select_for_update().get(key=key)


def record(action: str, *, tenant: Tenant | None, actor: Any,
           target: models.Model | tuple[str, str | int] | None = None,
           data: Mapping[str, Any] | BaseModel | None = None,
           request: HttpRequest | None = None, ip: str | None = None) -> AuditEvent:
    """Append one event to ``tenant``'s chain, in the caller's transaction.

    Call it inside the service's ``transaction.atomic()`` so the change and its
    audit row commit or roll back together.  ``ip`` overrides the address taken
    from ``request``.
    """
    if not ACTION_RE.match(action):
        raise ValueError(f"audit action {action!r} must be dotted lower-case, e.g. 'tenant.moved'")
    clean = _clean_data(action, data)
    target_type, target_id = _target(target)
    actor_id, actor_label = _actor(actor)
    address = normalise_ip(ip) if ip is not None else client_ip(request)
    key = chain_key(tenant)
    with transaction.atomic(savepoint=False):
        head = _lock_head(key)
        created_at = timezone.now()
        seq = head.seq + 1
        ev = AuditEvent(chain=key, seq=seq, tenant_id=tenant.pk if tenant else None,
                        actor_id=actor_id, actor_label=actor_label, action=action,
                        target_type=target_type, target_id=target_id, data=clean,
                        ip=address, created_at=created_at, prev_hash=head.last_hash)
        ev.hash = _row_hash(ev)
        ev._via_record = True  # type: ignore[attr-defined]
        ev.save(force_insert=True)
        AuditChainHead.objects.filter(pk=head.pk).update(seq=seq, last_hash=ev.hash,
                                                         updated_at=created_at)
    return ev


@dataclass(frozen=True, slots=True)
class Problem:
    """One integrity problem found by :func:`verify_chain`."""

    chain: str
    kind: str
    """``modified`` | ``broken_link`` | ``missing`` | ``head_mismatch`` | ``no_head`` |
    ``beyond_head``."""
    seq: int | None
    event_id: int | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.chain}#{self.seq}" if self.seq is not None else self.chain
        return f"{where}: {self.kind}: {self.detail}"


def _verify_key(key: str) -> Iterator[Problem]:
    # Order matters for a live system: the highest seq first, then the head.  Event and
    # head commit together and the head never goes back, so a row above the head can
    # only be a forgery, never a race.
    top = AuditEvent.objects.filter(chain=key).aggregate(m=Max("seq"))["m"]
    head = AuditChainHead.objects.filter(key=key).first()
    if head is None:
        if top is not None:
            yield Problem(key, "no_head", None, None, "events exist but the chain head is gone")
        return
    if top is not None and top > head.seq:
        yield Problem(key, "beyond_head", top, None,
                      f"rows up to seq {top} exist beyond the head's seq {head.seq}")
    expected = 1
    prev = GENESIS_HASH
    last_hash = GENESIS_HASH
    rows = (AuditEvent.objects.filter(chain=key, seq__lte=head.seq).order_by("seq")
            .iterator(chunk_size=2000))
    for ev in rows:
        if ev.seq != expected:
            yield Problem(key, "missing", expected, None,
                          f"rows {expected}..{ev.seq - 1} are missing")
        if ev.prev_hash != prev:
            yield Problem(key, "broken_link", ev.seq, ev.pk,
                          "prev_hash does not match the previous row's hash")
        if _row_hash(ev) != ev.hash:
            yield Problem(key, "modified", ev.seq, ev.pk,
                          "content does not match its hash (edited or reordered)")
        prev = ev.hash
        last_hash = ev.hash
        expected = ev.seq + 1
    if expected - 1 != head.seq:
        yield Problem(key, "missing", expected, None,
                      f"rows {expected}..{head.seq} at the end of the chain are missing")
    elif head.seq and last_hash != head.last_hash:
        yield Problem(key, "head_mismatch", head.seq, None,
                      "the last row's hash differs from the chain head")


def verify_chain(tenant: Tenant | None = None, *, chain: str | None = None) -> list[Problem]:
    """Check chains for edited, deleted, inserted or reordered rows; ``[]`` means intact.

    ``tenant`` checks that tenant's chain, ``chain`` a chain by key
    (``"platform"``); neither checks every chain.
    """
    if chain is not None:
        keys = [chain]
    elif tenant is not None:
        keys = [chain_key(tenant)]
    else:
        keys = sorted(set(AuditChainHead.objects.values_list("key", flat=True))
                      | set(AuditEvent.objects.order_by().values_list("chain", flat=True)
                            .distinct()))
    problems: list[Problem] = []
    for key in keys:
        problems.extend(_verify_key(key))
    return problems


def chain_stats() -> tuple[int, int]:
    """(number of chains, number of events) — for the CLI's summary line."""
    return AuditChainHead.objects.count(), AuditEvent.objects.count()

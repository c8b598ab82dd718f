"""Lock out guessing: after N failures a user, or an address, waits out a cool-off.

The same policy as login lockout (``[security] lockout_failures`` and
``lockout_cooloff_minutes``, 5 and 15 by default), kept in our own small table
instead of django-axes so tenancy does not depend on how accounts configures
axes (axes' handler is tied to the authentication flow and its request
signals; access-code redemption happens to an already logged-in user).

Failures count per user *and* per address; either reaching the limit locks.
IPv6 clients are counted per /64, because one host commonly owns a whole /64
and could otherwise rotate addresses for free.  Counting per address also
catches one attacker spreading guesses across many accounts; the price is that
a busy office behind one NAT address shares its five tries.  The counters live
in the database so every web worker and every restart sees the same numbers.
A failure more than a cool-off after the previous one starts a fresh count.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleetroom.tenancy.models import LockoutCounter


@dataclass(frozen=True, slots=True)
class Policy:
    """How many failures lock, and for how long."""

    failures: int
    cooloff: timedelta


def policy() -> Policy:
    """The configured policy (defaults 5 failures, 15 minutes)."""
    cfg = getattr(settings, "CONFIG", None)
    if cfg is None:
        return Policy(5, timedelta(minutes=15))
    return Policy(cfg.security.lockout_failures,
                  timedelta(minutes=cfg.security.lockout_cooloff_minutes))


def address_key(ip: str | None) -> str | None:
    """The counted unit of an address: itself for IPv4, its /64 for IPv6."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def keys_for(purpose: str, user: Any, ip: str | None) -> list[str]:
    """The counter keys one attempt touches: the user's and the address's."""
    keys = []
    if user is not None and getattr(user, "pk", None) is not None:
        keys.append(f"{purpose}:user:{user.pk}")
    net = address_key(ip)
    if net is not None:
        keys.append(f"{purpose}:ip:{net}")
    return keys


def locked_keys(keys: list[str], now: datetime | None = None) -> list[str]:
    """The keys among ``keys`` that are locked right now."""
    now = now or timezone.now()
    return list(LockoutCounter.objects.filter(key__in=keys, locked_until__gt=now)
                .values_list("key", flat=True))


def register_failure(keys: list[str], now: datetime | None = None) -> list[str]:
    """Count one failure on every key; returns the keys this failure locked."""
    now = now or timezone.now()
    pol = policy()
    newly_locked: list[str] = []
    with transaction.atomic():
        for key in keys:
            counter, _created = LockoutCounter.objects.select_for_update().get_or_create(key=key)
            stale = (counter.last_failure_at is None
                     or counter.last_failure_at <= now - pol.cooloff
                     or (counter.locked_until is not None and counter.locked_until <= now))
            if stale:
                counter.failures = 0
                counter.first_failure_at = now
                counter.locked_until = None
            counter.failures += 1
            counter.last_failure_at = now
            if counter.failures >= pol.failures and counter.locked_until is None:
                counter.locked_until = now + pol.cooloff
                newly_locked.append(key)
            counter.save()
    return newly_locked


def register_success(keys: list[str]) -> None:
    """A success clears the counters of the given keys (pass only the user's)."""
    LockoutCounter.objects.filter(key__in=keys).delete()


def prune(now: datetime | None = None) -> int:
    """Delete counters that no longer matter (unlocked, last failure beyond a cool-off).

    Meant for a daily task; returns how many rows went.
    """
    now = now or timezone.now()
    cutoff = now - policy().cooloff
    stale = (LockoutCounter.objects.filter(last_failure_at__lte=cutoff)
             .exclude(locked_until__gt=now))
    deleted, _by_model = stale.delete()
    return deleted

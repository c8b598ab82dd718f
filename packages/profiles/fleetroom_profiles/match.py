"""Choose the profile for a device: the most specific match wins.

Specificity is (number of sysObjectID arcs matched, whether a sysDescr pattern
also matched, depth of the ``extends`` chain).  So ``1.3.6.1.4.1.367.1.1`` plus
``^Gestetner`` beats plain ``1.3.6.1.4.1.367`` (Ricoh), which beats the generic
Printer-MIB profile.  Ties are broken by name so the choice is stable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .loader import ProfileSet
from .schema import MatchRule


@dataclass(frozen=True, slots=True)
class Match:
    """The chosen profile and a sentence saying why, for ``probe`` output."""

    name: str
    score: tuple[int, int, int]
    reason: str


def oid_has_prefix(oid: str, prefix: str) -> bool:
    """True when ``oid`` equals ``prefix`` or lies below it, on arc boundaries."""
    oid, prefix = oid.lstrip("."), prefix.lstrip(".")
    return oid == prefix or oid.startswith(prefix + ".")


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _rule_score(rule: MatchRule, sys_object_id: str | None,
                sys_descr: str | None) -> tuple[int, int, str] | None:
    parts = []
    arcs = 0
    if rule.sysobjectid is not None:
        if not sys_object_id or not oid_has_prefix(sys_object_id, rule.sysobjectid):
            return None
        arcs = rule.sysobjectid.count(".") + 1
        parts.append(f"sysObjectID {sys_object_id} is under {rule.sysobjectid}")
    descr_hit = 0
    if rule.sysdescr is not None:
        if not sys_descr or not _compiled(rule.sysdescr).search(sys_descr):
            return None
        descr_hit = 1
        parts.append(f"sysDescr matches /{rule.sysdescr}/")
    return arcs, descr_hit, " and ".join(parts)


def choose_profile(profiles: ProfileSet, sys_object_id: str | None,
                   sys_descr: str | None) -> Match | None:
    """The most specific non-abstract profile matching the device, or ``None``."""
    best: Match | None = None
    for name in sorted(profiles.profiles):
        profile = profiles.profiles[name].profile
        if profile.abstract:
            continue
        for rule in profile.match:
            hit = _rule_score(rule, sys_object_id, sys_descr)
            if hit is None:
                continue
            depth = len(profiles.resolve(name).chain)
            score = (hit[0], hit[1], depth)
            if best is None or score > best.score:
                best = Match(name, score, hit[2])
    return best

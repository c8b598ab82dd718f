"""Turn a device's raw answers into a normalised :class:`Reading`, using its profile.

Pure: no I/O.  :func:`plan` says what to ask; :func:`interpret` says what the
answers mean.  Both are driven by the resolved profile, so a new device model
needs a YAML file, not a code change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from fleetroom_profiles import ResolvedProfile
from fleetroom_profiles.decoders import get_decoder
from fleetroom_profiles.schema import ValueRule
from fleetroom_protocol import Counter, Missing, ProfileMatch, RawCounter, Reading

from ..snmp.types import SnmpValue, Target, ValueType
from . import oids, standard
from .snapshot import DeviceSnapshot

IDENTITY_FIELDS = ("vendor", "manufacturer", "model", "serial", "firmware", "mac")
MAX_TEXT = 512
"""Longest identity text we keep; longer values are device bugs or hostile."""

_JUNK_VALUES = frozenset({"", "unknown", "n/a", "none", "null", "0", "-", "?"})


@dataclass(frozen=True, slots=True)
class Plan:
    """What to ask a device: scalars in GET PDUs, subtrees to walk."""

    scalars: tuple[str, ...]
    walks: tuple[str, ...]


def plan(profile: ResolvedProfile) -> Plan:
    """Every OID the profile's rules and collectors need, each asked once.

    Scalars already covered by a walk are not asked again.
    """
    walks: list[str] = []
    for name in profile.collect:
        for root in standard.WALKS[name]:
            if root not in walks:
                walks.append(root)
    walks.extend(t.root for t in profile.counter_tables if t.root not in walks)
    scalars: list[str] = list(oids.SYSTEM_SCALARS)
    rule_oids = [r.oid for rules in profile.identity.values() for r in rules if r.oid]
    rule_oids += [c.oid for rules in profile.counters.values() for c in rules]
    rule_oids += [d.oid for d in profile.decoders]
    for oid in rule_oids:
        if oid not in scalars and not any(oid.startswith(w + ".") for w in walks):
            scalars.append(oid)
    return Plan(tuple(scalars), tuple(walks))


@lru_cache(maxsize=1024)
def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _extract(pattern: str, text: str) -> str | None:
    m = _rx(pattern).search(text)
    if m is None:
        return None
    if "value" in m.groupdict():
        return m.group("value")
    return m.group(1) if m.groups() else m.group(0)


def _clean_identity(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())[:MAX_TEXT]
    return None if text.lower() in _JUNK_VALUES else text


def _apply_value_rule(rule: ValueRule, snap: DeviceSnapshot,
                      sys_descr: str | None) -> tuple[str | None, str]:
    """(value, why-not) for one identity rule."""
    if rule.value is not None:
        return rule.value, ""
    if rule.sysdescr is not None:
        if not sys_descr:
            return None, "not-supported"
        got = _extract(rule.sysdescr, sys_descr)
        return _clean_identity(got), "" if got else "no-profile-rule"
    assert rule.oid is not None
    raw = snap.value(rule.oid)
    if raw is None:
        return None, snap.absent_reason(rule.oid)
    text = raw.as_text()
    if rule.regex is not None:
        extracted = _extract(rule.regex, text)
        if extracted is None:
            return None, "invalid-value"
        text = extracted
    cleaned = _clean_identity(text)
    return cleaned, "" if cleaned else "invalid-value"


def _counter_value(v: SnmpValue) -> tuple[int | None, int | None]:
    """(value, wrap width) of a counter-like SNMP value; text digits are accepted
    because some vendors publish counters as DisplayString."""
    width = 32 if v.type is ValueType.COUNTER32 else 64 if v.type is ValueType.COUNTER64 else None
    n = v.as_int()
    if n is None:
        text = v.as_text().replace(",", "").strip()
        n = int(text) if text.isdigit() else None
    return n, width


def _source(oid: str, profile: str, source: str) -> str:
    return f"{oid} ({profile}: {source})"


def interpret(snap: DeviceSnapshot, profile: ResolvedProfile, match_reason: str, *,
              target: Target, snmp_version: str, credential: str | None,
              started: datetime | None = None, duration_ms: int = 0) -> Reading:
    """Build the reading; every field the device did not give is listed in ``missing``."""
    r = Reading(taken_at=started or datetime.now(UTC), duration_ms=duration_ms,
                target=str(target) if target.address else (target.hostname or ""),
                snmp_version=snmp_version,
                credential=credential,
                profile=ProfileMatch(name=profile.name, chain=list(profile.chain),
                                     reason=match_reason))
    for name in profile.collect:
        standard.COLLECTORS[name](snap, r)
    r.identity.ip = target.address or None
    r.identity.hostname = target.hostname
    r.identity.device_kind = profile.device_kind or "unknown"  # type: ignore[assignment]

    _identity(snap, profile, r)
    _counters(snap, profile, r)
    _counter_tables(snap, profile, r)
    _decoders(snap, profile, r)
    _missing_sections(snap, profile, r)
    for root in sorted(snap.walks):
        stopped = snap.walks[root].stopped
        if stopped:
            r.errors.append(f"walk of {root} stopped early: {stopped}")
    return r


def _identity(snap: DeviceSnapshot, profile: ResolvedProfile, r: Reading) -> None:
    sys_descr = r.identity.sys_descr
    for field in IDENTITY_FIELDS:
        if getattr(r.identity, field):
            continue
        rules = profile.identity.get(field, ())
        reason = "no-profile-rule"
        for rule in rules:
            value, why = _apply_value_rule(rule, snap, sys_descr)
            if value:
                setattr(r.identity, field, value)
                break
            reason = why or reason
        else:
            if field == "mac" and "interfaces-mac" in profile.collect:
                reason = "not-supported"
            r.missing.append(Missing(field=f"identity.{field}", reason=reason))
    if r.identity.model is None and "hr-device" in profile.collect:
        # hrDeviceDescr of the printer row names the model on most devices (RFC 2790).
        descr = snap.table(oids.HR_DEVICE_ENTRY).get(3, {}).get(standard.printer_row(snap))
        model = _clean_identity(descr.as_text()) if descr is not None else None
        if model:
            r.identity.model = model
            r.missing = [m for m in r.missing if m.field != "identity.model"]
    for field, oid in (("sys_descr", oids.SYS_DESCR), ("sys_name", oids.SYS_NAME),
                       ("sys_location", oids.SYS_LOCATION), ("sys_contact", oids.SYS_CONTACT),
                       ("sys_object_id", oids.SYS_OBJECT_ID), ("uptime_s", oids.SYS_UPTIME)):
        if getattr(r.identity, field) is None:
            r.missing.append(Missing(field=f"identity.{field}",
                                     reason=snap.absent_reason(oid)))


def _counters(snap: DeviceSnapshot, profile: ResolvedProfile, r: Reading) -> None:
    for name, rules in profile.counters.items():
        reason = "not-supported"
        for rule in rules:
            raw = snap.value(rule.oid)
            if raw is None:
                reason = snap.absent_reason(rule.oid)
                continue
            value, width = _counter_value(raw)
            if value is None or value < 0:
                reason = "invalid-value"
                continue
            unit = rule.unit
            if rule.oid.startswith(oids.PRT_MARKER_LIFE_COUNT + "."):
                marker = rule.oid[len(oids.PRT_MARKER_LIFE_COUNT) + 1:]
                unit = standard.counter_unit(snap, marker) or unit  # type: ignore[assignment]
            r.counters.append(Counter(name=name, value=value, unit=unit, width=width,
                                      source=_source(rule.oid, profile.origin_of(rule),
                                                     rule.source)))
            break
        else:
            r.missing.append(Missing(field=f"counters.{name}", reason=reason))


def _counter_tables(snap: DeviceSnapshot, profile: ResolvedProfile, r: Reading) -> None:
    have = {c.name for c in r.counters}
    for t in profile.counter_tables:
        table = snap.table(t.root)
        values = table.get(t.value_column, {})
        if not values:
            r.missing.append(Missing(field=f"counter_tables.{t.root}",
                                     reason=snap.absent_reason(t.root)))
            continue
        for index, v in sorted(values.items()):
            value, width = _counter_value(v)
            if value is None:
                continue
            key = index
            if t.key == "column" and t.key_column is not None:
                key_v = table.get(t.key_column, {}).get(index)
                key = key_v.as_text() if key_v is not None else index
            label_v = table.get(t.label_column, {}).get(index) if t.label_column else None
            oid = f"{t.root}.{t.value_column}.{index}"
            r.raw_counters.append(RawCounter(key=key, value=value, oid=oid,
                                             profile=profile.origin_of(t),
                                             label=label_v.as_text() if label_v else None))
            name = t.map.get(key)
            if name and name not in have and value >= 0:
                r.counters.append(Counter(name=name, value=value, unit=t.unit, width=width,
                                          source=_source(oid, profile.origin_of(t), t.source)))
                have.add(name)
                r.missing = [m for m in r.missing if m.field != f"counters.{name}"]


def _decoders(snap: DeviceSnapshot, profile: ResolvedProfile, r: Reading) -> None:
    have = {c.name for c in r.counters}
    for d in profile.decoders:
        raw = snap.value(d.oid)
        if raw is None or not isinstance(raw.value, bytes):
            r.missing.append(Missing(field=f"decoders.{d.decoder}",
                                     reason=snap.absent_reason(d.oid)))
            continue
        result = get_decoder(d.decoder)(raw.value)
        r.errors.extend(f"{d.decoder}: {p}" for p in result.problems)
        for c in result.counters:
            r.raw_counters.append(RawCounter(key=c.key, value=c.value, oid=d.oid,
                                             profile=profile.origin_of(d), label=c.label))
            if c.name and c.name not in have and c.value >= 0:
                r.counters.append(Counter(name=c.name, value=c.value, unit="impressions",
                                          source=_source(d.oid, profile.origin_of(d),
                                                         f"{d.decoder} key {c.key}; {d.source}")))
                have.add(c.name)
                r.missing = [m for m in r.missing if m.field != f"counters.{c.name}"]


def _missing_sections(snap: DeviceSnapshot, profile: ResolvedProfile, r: Reading) -> None:
    """Whole sections the device did not give, so a consumer can tell empty from unknown."""
    checks = (
        ("supplies", "printer-supplies", oids.PRT_SUPPLIES_ENTRY, bool(r.supplies)),
        ("capabilities.trays", "printer-inputs", oids.PRT_INPUT_ENTRY,
         bool(r.capabilities.trays)),
        ("capabilities.output_bins", "printer-outputs", oids.PRT_OUTPUT_ENTRY,
         bool(r.capabilities.output_bins)),
        ("capabilities.duplex", "printer-media-paths", oids.PRT_MEDIA_PATH_ENTRY,
         r.capabilities.duplex is not None),
        ("capabilities.colour", "printer-markers", oids.PRT_MARKER_ENTRY,
         r.capabilities.colour is not None),
        ("capabilities.marker_technology", "printer-markers", oids.PRT_MARKER_ENTRY,
         r.capabilities.marker_technology is not None),
        ("status.printer_status", "hr-printer", oids.HR_PRINTER_ENTRY,
         r.status.printer_status is not None),
        ("status.device_status", "hr-device", oids.HR_DEVICE_ENTRY,
         r.status.device_status is not None),
    )
    for field, collector, root, present in checks:
        if present:
            continue
        reason = ("no-profile-rule" if collector not in profile.collect
                  else snap.absent_reason(root))
        r.missing.append(Missing(field=field, reason=reason))
    if "printer-alerts" not in profile.collect:
        r.missing.append(Missing(field="alerts", reason="no-profile-rule"))
    if r.counter("total") is None and not any(m.field == "counters.total" for m in r.missing):
        r.missing.append(Missing(field="counters.total", reason="no-profile-rule"))

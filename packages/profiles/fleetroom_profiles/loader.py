"""Load, validate and resolve profile files.

Errors name the file, the line and the problem, because the people who write
profiles are dealers' technicians with a text editor, not Python developers.
A broken file never takes the others down: :func:`load_directory` collects every
problem and the caller decides (the ``profiles check`` command prints them all;
the agent refuses a bundle with any error and keeps its old profiles).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .schema import CounterRule, CounterTable, DecoderRule, Profile, ValueRule

MAX_PROFILE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProfileProblem:
    """One thing wrong with one file, located as precisely as the parser allows."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class ProfileError(Exception):
    """Raised when profiles are loaded strictly and any file is broken."""

    def __init__(self, problems: list[ProfileProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class LoadedProfile:
    """A validated profile and the file it came from."""

    profile: Profile
    path: str


def _line_index(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map every key path in a composed YAML document to its 1-based line."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            lines.update({k: v for k, v in _line_index(value_node, (*path, key)).items()
                          if k != (*path, key)})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_index(item, (*path, i)))
    return lines


def _nearest_line(lines: Mapping[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    while True:
        if loc in lines:
            return lines[loc]
        if not loc:
            return None
        loc = loc[:-1]


def parse_profile(text: str, path: str) -> tuple[Profile | None, list[ProfileProblem]]:
    """Parse one profile file's text.  Never raises for bad input; returns problems."""
    profile, problems, _ = _parse(text, path)
    return profile, problems


LineMap = dict[tuple[Any, ...], int]


def _parse(text: str, path: str) -> tuple[Profile | None, list[ProfileProblem], LineMap]:
    if len(text.encode()) > MAX_PROFILE_BYTES:
        return None, [ProfileProblem(path, None,
                                     f"file larger than {MAX_PROFILE_BYTES} bytes")], {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [ProfileProblem(path, line, f"YAML syntax: {problem}")], {}
    if not isinstance(data, dict) or node is None:
        return None, [ProfileProblem(path, 1, "a profile must be a YAML mapping")], {}
    data.setdefault("name", Path(path).stem)
    lines = _line_index(node)
    try:
        return Profile.model_validate(data), [], lines
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            # A single rule is accepted where a list is allowed; don't show the
            # list index the author never wrote.
            shown = [p for i, p in enumerate(loc)
                     if not isinstance(p, int) or (*loc[:i], p) in lines]
            field_path = ".".join(str(p) for p in shown) or "(top level)"
            problems.append(ProfileProblem(path, _nearest_line(lines, loc),
                                           f"{field_path}: {err['msg']}"))
        return None, problems, lines


def load_files(paths: Iterable[Path]) -> tuple[dict[str, LoadedProfile], list[ProfileProblem]]:
    """Load many files; a later file with the same name replaces an earlier one
    (so a local override directory can replace a shipped profile)."""
    loaded: dict[str, LoadedProfile] = {}
    problems: list[ProfileProblem] = []
    lines: dict[str, LineMap] = {}
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(ProfileProblem(str(p), None, f"cannot read: {exc}"))
            continue
        profile, found, line_map = _parse(text, str(p))
        problems.extend(found)
        if profile is not None:
            loaded[profile.name] = LoadedProfile(profile, str(p))
            lines[str(p)] = line_map
    problems.extend(_check_references(loaded, lines))
    return loaded, problems


def _check_references(loaded: Mapping[str, LoadedProfile],
                      lines: Mapping[str, LineMap]) -> list[ProfileProblem]:
    from .decoders import registered_decoders

    problems = []
    known_decoders = registered_decoders()
    for name, lp in loaded.items():
        line_map = lines.get(lp.path, {})
        for i, parent in enumerate(lp.profile.extends):
            if parent not in loaded:
                problems.append(ProfileProblem(lp.path, _nearest_line(line_map, ("extends", i)),
                                               f"extends unknown profile {parent!r}"))
        for i, d in enumerate(lp.profile.decoders):
            if d.decoder not in known_decoders:
                problems.append(ProfileProblem(
                    lp.path, _nearest_line(line_map, ("decoders", i, "decoder")),
                    f"decoder {d.decoder!r} is not registered (known: "
                    f"{', '.join(sorted(known_decoders))})"))
        try:
            _chain(name, loaded)
        except ValueError as exc:
            problems.append(ProfileProblem(lp.path, _nearest_line(line_map, ("extends",)),
                                           str(exc)))
    return problems


def _chain(name: str, loaded: Mapping[str, LoadedProfile],
           seen: tuple[str, ...] = ()) -> list[str]:
    """Root-first list of profile names, parents before children, no repeats."""
    if name in seen:
        raise ValueError(f"extends cycle: {' -> '.join((*seen, name))}")
    if name not in loaded:
        return []
    order: list[str] = []
    for parent in loaded[name].profile.extends:
        for n in _chain(parent, loaded, (*seen, name)):
            if n not in order:
                order.append(n)
    order.append(name)
    return order


def shipped_profile_dir() -> Path:
    """The profiles that come with this release."""
    return Path(str(resources.files("fleetroom_profiles") / "data"))


def profile_files(directories: Iterable[Path]) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` under the directories, in a stable order."""
    files: list[Path] = []
    for d in directories:
        files.extend(sorted(p for p in d.rglob("*") if p.suffix in (".yaml", ".yml")))
    return files


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with everything it inherits folded in.

    ``identity`` and ``counters`` keep every rule for a name, most specific first:
    when the vendor's serial OID gives nothing, prtGeneralSerialNumber still can.
    """

    name: str
    chain: tuple[str, ...]
    device_kind: str | None
    identity: dict[str, tuple[ValueRule, ...]]
    collect: tuple[str, ...]
    counters: dict[str, tuple[CounterRule, ...]]
    counter_tables: tuple[CounterTable, ...]
    decoders: tuple[DecoderRule, ...]
    status_oids: tuple[str, ...]
    origin: dict[int, str] = field(default_factory=dict, compare=False, repr=False)
    """``id(rule)`` → name of the profile file that holds it, for provenance."""

    def origin_of(self, rule: object) -> str:
        """Which profile in the chain a rule came from."""
        return self.origin.get(id(rule), self.name)


@dataclass
class ProfileSet:
    """All loaded profiles, resolved once; what collection and matching use."""

    profiles: dict[str, LoadedProfile]
    problems: list[ProfileProblem] = field(default_factory=list)
    _resolved: dict[str, ResolvedProfile] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, extra_dirs: Iterable[Path] = (), *, include_shipped: bool = True,
             strict: bool = True) -> ProfileSet:
        """Shipped profiles, then each extra directory (later ones override)."""
        dirs = ([shipped_profile_dir()] if include_shipped else []) + list(extra_dirs)
        loaded, problems = load_files(profile_files(dirs))
        if strict and problems:
            raise ProfileError(problems)
        return cls(loaded, problems)

    def resolve(self, name: str) -> ResolvedProfile:
        """Fold the ``extends`` chain of ``name`` into one profile (cached)."""
        if name in self._resolved:
            return self._resolved[name]
        chain = _chain(name, self.profiles)
        identity: dict[str, tuple[ValueRule, ...]] = {}
        counters: dict[str, tuple[CounterRule, ...]] = {}
        collect: list[str] = []
        tables: list[CounterTable] = []
        decoders: list[DecoderRule] = []
        status: list[str] = []
        kind: str | None = None
        origin: dict[int, str] = {}
        for n in chain:
            p = self.profiles[n].profile
            for rule in (*(r for rules in p.identity.values() for r in rules), *p.counters,
                         *p.counter_tables, *p.decoders):
                origin[id(rule)] = n
            for key, rules in p.identity.items():
                identity[key] = (*rules, *identity.get(key, ()))
            for c in p.counters:
                counters[c.name] = (c, *counters.get(c.name, ()))
            collect.extend(c for c in p.collect if c not in collect)
            tables.extend(p.counter_tables)
            decoders.extend(p.decoders)
            status.extend(o for o in p.status_oids if o not in status)
            kind = p.device_kind or kind
        resolved = ResolvedProfile(name, tuple(chain), kind, identity, tuple(collect), counters,
                                   tuple(tables), tuple(decoders), tuple(status), origin)
        self._resolved[name] = resolved
        return resolved

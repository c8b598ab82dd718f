"""Fleetroom device profiles: YAML data, its schema, loader, matcher and decoders."""

from .loader import (
    LoadedProfile,
    ProfileError,
    ProfileProblem,
    ProfileSet,
    ResolvedProfile,
    parse_profile,
    shipped_profile_dir,
)
from .match import Match, choose_profile, oid_has_prefix

__all__ = [
    "LoadedProfile",
    "Match",
    "ProfileError",
    "ProfileProblem",
    "ProfileSet",
    "ResolvedProfile",
    "choose_profile",
    "oid_has_prefix",
    "parse_profile",
    "shipped_profile_dir",
]

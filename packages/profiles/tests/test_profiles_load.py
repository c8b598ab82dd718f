"""The shipped profiles load cleanly and follow the house rules for vendor files."""

from __future__ import annotations

from pathlib import Path

import yaml
from fleetroom_profiles import ProfileSet, shipped_profile_dir
from fleetroom_profiles.decoders import registered_decoders

VENDOR_DIR = shipped_profile_dir() / "vendors"

# One concrete profile per vendor family and OEM brand the product promises.
REQUIRED = {
    "hp", "kyocera", "utax", "ricoh", "gestetner", "lanier", "savin", "nrg", "canon",
    "xerox", "fujixerox", "fujifilm", "konica-minolta", "develop", "sharp", "brother",
    "lexmark", "dell", "samsung", "toshiba-estudio", "toshiba-tec-label", "oki", "epson",
    "epson-scanner", "zebra", "tsc",
}


def test_all_shipped_profiles_load_with_zero_problems():
    ps = ProfileSet.load()  # strict: raises ProfileError on any problem
    assert ps.problems == []
    assert set(ps.profiles) >= REQUIRED
    for name in ps.profiles:
        ps.resolve(name)  # every chain resolves


def test_brother_decoder_is_registered():
    assert "brother_counters" in registered_decoders()


def test_vendor_files_start_with_a_comment_naming_their_sources():
    files = sorted(VENDOR_DIR.glob("*.yaml"))
    assert files
    for path in files:
        head = path.read_text(encoding="utf-8").splitlines()
        assert head[0].startswith("# "), path.name
        comment = " ".join(line for line in head if line.startswith("#"))
        assert "Sources:" in comment, path.name


def test_file_name_is_profile_name():
    for path in VENDOR_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["name"] == path.stem


def test_concrete_vendor_profiles_say_who_made_the_device():
    ps = ProfileSet.load()
    for name, lp in ps.profiles.items():
        if lp.profile.abstract or not Path(lp.path).is_relative_to(VENDOR_DIR):
            continue
        r = ps.resolve(name)
        for field in ("vendor", "manufacturer"):
            rules = r.identity.get(field, ())
            assert rules, f"{name}: no {field}"
            assert rules[0].value, f"{name}: {field} must be a literal"
        assert "generic-printer" in r.chain or name == "epson-scanner", name


def test_every_counter_and_table_name_is_normalised_snake_case():
    ps = ProfileSet.load()
    for name in ps.profiles:
        r = ps.resolve(name)
        names = set(r.counters) | {n for t in r.counter_tables for n in t.map.values()}
        for n in names:
            assert n == n.lower(), (name, n)
            assert " " not in n, (name, n)
        assert "color" not in " ".join(names), f"{name}: spell it colour"


def test_oem_profiles_cannot_steal_their_parents_devices():
    """An OEM profile extends its maker's profile, so it wins ties on depth; each of
    its match rules must therefore require a sysDescr pattern."""
    ps = ProfileSet.load()
    for name, lp in ps.profiles.items():
        parents = [p for p in lp.profile.extends if not ps.profiles[p].profile.abstract]
        if lp.profile.abstract or not parents:
            continue
        for rule in lp.profile.match:
            assert rule.sysdescr is not None, f"{name}: rule without sysDescr"

"""German and English complete: every translatable string of ours is in a German
catalogue, translated, not fuzzy, and each committed .mo is what its .po compiles to.

Why check against a fresh ``makemessages`` run: a string added to a template or a
module without a translation would otherwise ship in English on the German UI.
Catalogues are Django's usual ones: one per app that has a ``locale/`` directory,
plus ``server/fleetroom/locale`` for the project templates and the rest
(``make messages`` refreshes and compiles them all).
"""

from __future__ import annotations

import gettext
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[1] / "fleetroom"
CATALOGUES = sorted(SERVER.rglob("locale/de/LC_MESSAGES/django.po"))


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} (Debian package gettext) is missing, and CI must check i18n")
        pytest.skip(f"{tool} not installed (apt-get install gettext)")
    return path


def _catalog(mo: Path) -> dict[object, str]:
    with mo.open("rb") as fh:
        return dict(gettext.GNUTranslations(fh)._catalog)  # type: ignore[attr-defined]


def _msgids(po: Path, tmp: Path) -> set[str]:
    """Every msgid, parsed by gettext's own tools: ``msgen`` fills each msgstr with its
    msgid (so none is dropped as untranslated), ``msgfmt`` compiles, we read the keys."""
    filled, out = tmp / f"ids-{abs(hash(po))}.po", tmp / f"ids-{abs(hash(po))}.mo"
    subprocess.run([_need("msgen"), "-o", str(filled), str(po)], check=True)
    subprocess.run([_need("msgfmt"), "-o", str(out), str(filled)], check=True)
    return {k if isinstance(k, str) else k[0] for k in _catalog(out) if k}


def test_the_project_catalogue_exists():
    assert SERVER / "locale" / "de" / "LC_MESSAGES" / "django.po" in CATALOGUES


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: str(p.relative_to(SERVER)))
def test_german_catalogue_is_complete_and_not_fuzzy(po):
    stats = subprocess.run([_need("msgfmt"), "--statistics", "--check-format", "-o",
                            os.devnull, str(po)], capture_output=True, text=True,
                           check=True).stderr
    assert "untranslated" not in stats, f"{po}: {stats}"
    assert "fuzzy" not in stats, f"{po}: {stats}"


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: str(p.relative_to(SERVER)))
def test_committed_mo_matches_the_po(po, tmp_path):
    fresh = tmp_path / "django.mo"
    subprocess.run([_need("msgfmt"), "-o", str(fresh), str(po)], check=True)
    assert _catalog(po.with_suffix(".mo")) == _catalog(fresh), \
        f"{po.with_suffix('.mo')} is stale (run: make messages)"


def test_every_string_in_the_source_is_in_a_catalogue(tmp_path):
    """A fresh extraction may contain no msgid that the committed catalogues lack."""
    _need("xgettext")
    copy = tmp_path / "fleetroom"
    shutil.copytree(SERVER, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    for po in copy.rglob("locale/de/LC_MESSAGES/django.*"):
        po.unlink()  # extract from scratch (the directories stay: they route the strings)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FLEETROOM_DATA_DIR": str(tmp_path / "d"),
           "FLEETROOM_SECRET_KEY": "k" * 60}
    subprocess.run([sys.executable, "-m", "django", "makemessages", "-l", "de",
                    "--no-location", "--settings", "fleetroom.settings"],
                   cwd=copy, env=env, check=True, capture_output=True)
    extracted: set[str] = set()
    for po in copy.rglob("locale/de/LC_MESSAGES/django.po"):
        extracted |= _msgids(po, tmp_path)
    known: set[str] = set()
    for po in CATALOGUES:
        known |= _msgids(po, tmp_path)
    missing = extracted - known
    assert not missing, (f"{len(missing)} string(s) in no German catalogue (run: make "
                         f"messages, then translate), e.g. {sorted(missing)[:5]}")

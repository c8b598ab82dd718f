"""A corpus of broken profile files: each must give a problem naming the file and the
line a technician has to fix.  Line numbers are counted by hand in the texts below."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleetroom_profiles import shipped_profile_dir
from fleetroom_profiles.loader import load_files, parse_profile, profile_files

SYNTAX_ERROR = """\
name: broken-syntax
extends: [generic-printer]
match:
  - sysobjectid: 1.3.6.1.4.1.99999
  sysdescr: '^Acme'
"""  # line 5: `sysdescr` lost its indentation, so the list item is left dangling

UNKNOWN_FIELD = """\
name: unknown-field
extends: [generic-printer]
match:
  - sysobjectid: 1.3.6.1.4.1.99999
counters:
  - name: total
    oid: 1.3.6.1.4.1.99999.1.0
    colour: true
    source: test corpus
"""  # line 8: counters have no `colour` field

NOT_NUMERIC_OID = """\
name: bad-oid
extends: [generic-printer]
match:
  - sysobjectid: 1.3.6.1.4.1.99999
counters:
  - name: total
    oid: 1.3.6.1.4.1.99999.1.0
    source: test corpus
  - name: mono
    oid: prtMarkerLifeCount.1.1
    source: test corpus
"""  # line 10: an OID must be numeric

MISSING_SOURCE = """\
name: no-source
extends: [generic-printer]
match:
  - sysobjectid: 1.3.6.1.4.1.99999
identity:
  vendor:
    value: Acme
    source: test corpus
  serial:
    oid: 1.3.6.1.4.1.99999.2.0
"""  # line 9: the serial rule has no source

UNKNOWN_DECODER = """\
name: unknown-decoder
extends: [generic-printer]
match:
  - sysobjectid: 1.3.6.1.4.1.99999
decoders:
  - oid: 1.3.6.1.4.1.99999.3.0
    decoder: acme_counters
    source: test corpus
"""  # line 7: no decoder `acme_counters` is registered

CYCLE_A = """\
name: cycle-a
abstract: true
extends: [cycle-b]
"""  # line 3
CYCLE_B = """\
name: cycle-b
abstract: true
extends: [cycle-a]
"""  # line 3


@pytest.mark.parametrize(("text", "line", "words"), [
    (SYNTAX_ERROR, 5, "YAML syntax"),
    (UNKNOWN_FIELD, 8, "counters.0.colour: Extra inputs are not permitted"),
    (NOT_NUMERIC_OID, 10, "not a numeric OID: 'prtMarkerLifeCount.1.1'"),
    (MISSING_SOURCE, 9, "identity.serial.source: Field required"),
], ids=["syntax-error", "unknown-field", "oid-not-numeric", "missing-source"])
def test_parse_problem_names_file_and_line(text, line, words):
    profile, problems = parse_profile(text, "vendors/acme.yaml")
    assert profile is None
    assert len(problems) == 1
    p = problems[0]
    assert p.path == "vendors/acme.yaml"
    assert p.line == line
    assert words in p.message
    assert str(p).startswith(f"vendors/acme.yaml:{line}: ")


def _write(tmp_path: Path, files: dict[str, str]) -> list[Path]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return profile_files([shipped_profile_dir(), tmp_path])


def test_unknown_decoder_names_the_file(tmp_path):
    _, problems = load_files(_write(tmp_path, {"acme.yaml": UNKNOWN_DECODER}))
    assert len(problems) == 1
    assert problems[0].path == str(tmp_path / "acme.yaml")
    assert "decoder 'acme_counters' is not registered" in problems[0].message
    assert "brother_counters" in problems[0].message  # lists what is known


def test_extends_cycle_names_both_files(tmp_path):
    _, problems = load_files(_write(tmp_path, {"cycle-a.yaml": CYCLE_A,
                                               "cycle-b.yaml": CYCLE_B}))
    assert {p.path for p in problems} == {str(tmp_path / "cycle-a.yaml"),
                                          str(tmp_path / "cycle-b.yaml")}
    assert all("extends cycle" in p.message for p in problems)


# The loader's cross-file checks (_check_references) also name the line.
def test_unknown_decoder_names_the_line(tmp_path):
    _, problems = load_files(_write(tmp_path, {"acme.yaml": UNKNOWN_DECODER}))
    assert problems[0].line == 7


def test_extends_cycle_names_the_line(tmp_path):
    _, problems = load_files(_write(tmp_path, {"cycle-a.yaml": CYCLE_A,
                                               "cycle-b.yaml": CYCLE_B}))
    assert [p.line for p in problems] == [3, 3]


def test_a_broken_file_does_not_take_the_others_down(tmp_path):
    loaded, problems = load_files(_write(tmp_path, {"acme.yaml": NOT_NUMERIC_OID}))
    assert [p.line for p in problems] == [10]
    assert "bad-oid" not in loaded
    assert {"hp", "brother", "canon"} <= set(loaded)

"""``fleetroom import-readings``: real ``fleetroom-agent scan --json`` output, plus
hostile lines that must be reported by number while everything else is stored."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from fleetroom.cli import app
from fleetroom.fleet.ingest import MAX_LINE_BYTES, iter_lines, parse_line, resolve_tenant
from fleetroom.fleet.models import CounterValue, Device, Reading
from fleetroom_fleetsim.snmpsim_runner import SnmpSimulator
from fleetroom_fleetsim.synthetic import DATA_DIR as SYNTHETIC_DIR
from fleetroom_protocol import Reading as ProtocolReading
from typer.testing import CliRunner

from server.tests.test_fleet_support import LIFE, SERIAL, make_tree, recording

pytestmark = pytest.mark.django_db
AGENT = str(Path(sys.executable).parent / "fleetroom-agent")
SCANNED = ("alerts", "counter-wrap-before", "v1-missing")  # static recordings


@pytest.fixture(scope="module")
def scan_lines() -> list[str]:
    """One ``scan --json`` per recording, exactly as a technician would run it."""
    lines: list[str] = []
    with SnmpSimulator([SYNTHETIC_DIR]) as sim:
        for community in SCANNED:
            p = subprocess.run([AGENT, "scan", sim.endpoint, "--community", community,
                                "--json"], capture_output=True, text=True, timeout=120,
                               check=False)
            assert p.returncode == 0, p.stderr
            out = p.stdout.splitlines()
            assert len(out) == 1, p.stdout
            lines.extend(out)
    return lines


@pytest.fixture
def tree():
    return make_tree()


def hostile(good: str) -> dict[str, str]:
    doc = json.loads(good)
    wrong_schema = dict(doc, schema="fleetroom.reading/2")
    negative = json.loads(good)
    negative["counters"][0]["value"] = -5
    extra = dict(doc, surprise=True)
    return {
        "invalid_json": good[: len(good) // 2],
        "wrong_schema": json.dumps(wrong_schema),
        "negative": json.dumps(negative),
        "huge": '{"schema": "' + "A" * (MAX_LINE_BYTES + 10) + '"}',
        "array": "[1, 2, 3]",
        "unknown_field": json.dumps(extra),
        "binary": "\x00\x01\x02 not text",
    }


def write_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "scan.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_real_scan_output_with_hostile_lines(tmp_path, tree, scan_lines):
    bad = hostile(scan_lines[0])
    lines = [scan_lines[0], bad["invalid_json"], bad["wrong_schema"], scan_lines[1],
             bad["huge"], bad["negative"], "", bad["array"], bad["unknown_field"],
             scan_lines[0], bad["binary"], scan_lines[2]]
    path = write_file(tmp_path, lines)
    runner = CliRunner()
    result = runner.invoke(app, ["import-readings", str(path), "--tenant", str(tree["s1"].pk)])
    assert result.exit_code == 2, result.output
    out = result.stdout
    assert "lines read: 11" in out  # the blank line is not a reading
    assert "readings stored: 3" in out
    assert "duplicates skipped: 1" in out
    assert "new devices: 3" in out
    assert "errors: 7" in out
    err = result.stderr
    assert "line 2: invalid JSON" in err
    assert "line 3: unsupported schema 'fleetroom.reading/2'" in err
    assert "(this server reads fleetroom.reading/1)" in err
    assert f"line 5: line longer than {MAX_LINE_BYTES} bytes; skipped" in err
    assert "line 6: invalid reading: counters.0.value: Input should be greater than or " \
           "equal to 0" in err
    assert "line 8: not a reading: expected a JSON object" in err
    assert "line 9: invalid reading: surprise: Extra inputs are not permitted" in err
    assert "line 11: invalid JSON" in err
    assert "AAAA" not in err  # hostile content is never echoed
    assert "7 line(s) not imported" in err

    # Nothing good was lost, and the stored values are the recordings' values.
    assert Reading.objects.count() == 3
    for community in SCANNED:
        r = recording(community)
        serial = r.get(SERIAL)
        total = int(r[LIFE][1])
        if serial is None:
            device = Device.objects.get(identity_weak=True)
        else:
            device = Device.objects.get(serial=serial[1])
        assert CounterValue.objects.get(reading_id=device.last_reading_id).value == total


def test_stdin_and_reimport_is_idempotent(tree, scan_lines):
    data = ("\n".join(scan_lines) + "\n").encode()
    runner = CliRunner()
    first = runner.invoke(app, ["import-readings", "-", "--tenant", tree["s1"].path],
                          input=data)
    assert first.exit_code == 0, first.output
    assert "readings stored: 3" in first.stdout
    again = runner.invoke(app, ["import-readings", "-", "--tenant",
                                "Platform/Dealer One/Acme/Berlin", "--json"], input=data)
    assert again.exit_code == 0, again.output
    counts = json.loads(again.stdout)
    assert counts == {"lines": 3, "readings": 0, "duplicates": 3, "new_devices": 0,
                      "updated_devices": 0, "errors": 0, "warnings": 0}
    assert Reading.objects.count() == 3


def test_rejected_by_the_service_is_reported_with_its_line(tmp_path, tree, scan_lines):
    doc = json.loads(scan_lines[2])  # v1-missing: no serial
    doc["identity"]["mac"] = None
    doc["identity"]["ip"] = None
    doc["target"] = ""
    path = write_file(tmp_path, [scan_lines[0], json.dumps(doc)])
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 line"):
        call_command("import_readings", str(path), tenant=str(tree["s1"].pk), stdout=out,
                     stderr=err)
    assert "line 2: not stored: the reading has no serial number" in err.getvalue()
    assert Reading.objects.count() == 1


def test_tenant_must_exist_and_take_readings(tmp_path, tree, scan_lines):
    path = write_file(tmp_path, scan_lines[:1])
    runner = CliRunner()
    missing = runner.invoke(app, ["import-readings", str(path), "--tenant", "99999"])
    assert missing.exit_code == 2
    assert "no tenant '99999'" in missing.stderr
    dealer = runner.invoke(app, ["import-readings", str(path), "--tenant", "Dealer One"])
    assert dealer.exit_code == 2
    assert "not to a dealer" in dealer.stderr
    nofile = runner.invoke(app, ["import-readings", str(tmp_path / "nope"), "--tenant",
                                 str(tree["s1"].pk)])
    assert nofile.exit_code == 2
    assert "cannot read" in nofile.stderr
    assert Reading.objects.count() == 0


def test_resolve_tenant_forms(tree):
    s1 = tree["s1"]
    assert resolve_tenant(str(s1.pk)) == s1
    assert resolve_tenant(s1.path) == s1
    assert resolve_tenant("Platform/Dealer One/Acme/Berlin") == s1
    assert resolve_tenant("Dealer One/Acme/Berlin") == s1


def test_iter_lines_skips_long_lines_without_holding_them():
    stream = io.BytesIO(b"a\n" + b"x" * 50 + b"\nb\n" + b"y" * 11 + b"\nend")
    assert list(iter_lines(stream, limit=10)) == [
        (1, b"a\n"), (2, None), (3, b"b\n"), (4, None), (5, b"end")]


def test_parse_line_accepts_what_the_agent_prints(scan_lines):
    for line in scan_lines:
        assert parse_line(line.encode()) == ProtocolReading.model_validate_json(line)

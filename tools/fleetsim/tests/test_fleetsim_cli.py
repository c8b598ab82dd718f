"""``fleetroom-fleetsim serve``: loopback only, lists communities, stops on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

import pytest
from fleetroom_fleetsim import cli
from fleetroom_fleetsim.snmpsim_runner import free_udp_port


@pytest.mark.parametrize("text", ["0.0.0.0:161", "192.168.1.10:1161", "[::]:1161", "localhost",
                                  "127.0.0.1", "127.0.0.1:70000"])
def test_bind_must_be_a_loopback_host_and_port(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_bind(text)


def test_bind_accepts_loopback():
    assert cli.parse_bind("127.0.0.1:1161") == ("127.0.0.1", 1161)
    assert cli.parse_bind("127.3.4.5:0") == ("127.3.4.5", 0)
    assert cli.parse_bind("[::1]:1161") == ("::1", 1161)


def test_communities_are_file_stems_with_subdirectories(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.snmprec").write_text("")
    (tmp_path / "sub" / "b.snmprec").write_text("")
    (tmp_path / "README.md").write_text("")
    assert [c for c, _ in cli.communities(tmp_path)] == ["a", "sub/b"]


def test_nothing_to_serve_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve"])
    assert exc.value.code == 2
    assert "nothing to serve" in capsys.readouterr().err


@pytest.mark.snmpsim
@pytest.mark.netsnmp
@pytest.mark.timeout(180)
def test_serve_synthetic_demo_until_interrupted(netsnmp):
    port = free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetroom_fleetsim.cli", "serve", "--synthetic-demo",
         "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert f"127.0.0.1:{port}" in text, text
        assert "demo-zebra-zt411" in text
        assert "demo-switch-cisco" in text
        assert "counter-wrap" not in text, "only the demo-* files"
        got = netsnmp.get(f"127.0.0.1:{port}", ["1.3.6.1.2.1.1.1.0"],
                          ["-v2c", "-c", "demo-zebra-zt411"])
        assert got["1.3.6.1.2.1.1.1.0"] == ("OCTETS", b"ZTC ZT411-203dpi ZPL")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "stopping" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""``fleetroom serve`` over HTTPS with a private CA, plus the agents' second listener.

Real processes (gunicorn under the supervisor) on loopback; the client trusts
only the generated CA, so a passing request proves the chain and the names.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXE = Path(sys.executable).parent / "fleetroom"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, ctx: ssl.SSLContext | None) -> int:
    with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
        return int(resp.status)


def _wait(url: str, ctx: ssl.SSLContext | None, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited"
        try:
            if _get(url, ctx) == 200:
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{url} did not answer")


def test_tls_selfsigned_and_https_listeners(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}
    env |= {"FLEETROOM_DATA_DIR": str(data), "DJANGO_SETTINGS_MODULE": "fleetroom.settings"}
    subprocess.run([EXE, "init"], env=env, check=True, capture_output=True)
    out = subprocess.run([EXE, "tls-selfsigned", "127.0.0.1", "localhost"], env=env,
                         check=True, capture_output=True, text=True).stdout
    tls = data / "tls"
    assert str(tls / "ca.pem") in out
    for name in ("server.key", "ca.key"):
        assert (tls / name).stat().st_mode & 0o077 == 0, name
    web, agents = _port(), _port()
    env |= {"FLEETROOM_TLS_CERT": str(tls / "server.pem"),
            "FLEETROOM_TLS_KEY": str(tls / "server.key"),
            "FLEETROOM_AGENTS_BIND": f"127.0.0.1:{agents}"}
    proc = subprocess.Popen([EXE, "serve", "--bind", f"127.0.0.1:{web}", "--web-workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        _wait(f"https://127.0.0.1:{web}/healthz", ctx, proc)
        _wait(f"https://localhost:{agents}/healthz", ctx, proc)
        # A client that does not trust the private CA is refused.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(f"https://127.0.0.1:{agents}/healthz", ssl.create_default_context())
        # TLS 1.1 and older are not offered.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(tls / "ca.pem"))
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, OSError)):
            _get(f"https://127.0.0.1:{agents}/healthz", old)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_web_can_stay_plain_http_while_agents_use_https(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETROOM_")}
    env |= {"FLEETROOM_DATA_DIR": str(data), "DJANGO_SETTINGS_MODULE": "fleetroom.settings"}
    subprocess.run([EXE, "init"], env=env, check=True, capture_output=True)
    subprocess.run([EXE, "tls-selfsigned", "127.0.0.1"], env=env, check=True,
                   capture_output=True)
    tls = data / "tls"
    web, agents = _port(), _port()
    env |= {"FLEETROOM_TLS_CERT": str(tls / "server.pem"),
            "FLEETROOM_TLS_KEY": str(tls / "server.key"), "FLEETROOM_WEB_TLS": "false",
            "FLEETROOM_AGENTS_BIND": f"127.0.0.1:{agents}"}
    proc = subprocess.Popen([EXE, "serve", "--bind", f"127.0.0.1:{web}", "--web-workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        _wait(f"https://127.0.0.1:{agents}/healthz", ctx, proc)
        _wait(f"http://127.0.0.1:{web}/healthz", None, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_tls_settings_must_come_in_pairs(tmp_path):
    from fleetroom import config

    env = {"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": "k" * 60,
           "FLEETROOM_AGENTS_BIND": "127.0.0.1:8443"}
    with pytest.raises(config.ConfigError, match="agents_bind serves HTTPS only"):
        config.load(env)
    env = {"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": "k" * 60,
           "FLEETROOM_TLS_CERT": str(tmp_path / "missing.pem")}
    with pytest.raises(config.ConfigError, match="set together"):
        config.load(env)

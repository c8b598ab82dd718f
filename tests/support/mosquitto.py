"""A private Mosquitto broker for tests: our own process, never the system service.

:class:`Mosquitto` writes a configuration into a temporary directory — a TLS
listener (MQTT over TLS, like port 8883 in production) and a WebSocket-over-TLS
listener (like 443), both on loopback and on free high ports, certificates from a
throw-away ``trustme`` CA, no anonymous access — and loads the dynamic-security
plugin with a fresh ``dynsec.json`` holding only the administrator account.  The
server's provisioning code (:mod:`fleetroom.agents.mqtt_broker`) then creates the
bridge and agent accounts through the plugin, exactly as in production.

:meth:`Mosquitto.restart` stops the broker and starts it again on the same ports
with the same accounts (the plugin saves them to ``dynsec.json``) but *without*
persistence: every session, subscription and in-flight message is gone, the
harshest kind of restart a transport must survive.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.processes import stop_process

ADMIN_USERNAME = "fleetroom-admin"
PLUGIN_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so",
                "/usr/lib/mosquitto_dynamic_security.so",
                "/usr/local/lib/mosquitto_dynamic_security.so",
                "/usr/local/lib/*/mosquitto_dynamic_security.so")


def find_mosquitto() -> str | None:
    """The broker binary (Debian installs it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def find_dynsec_plugin() -> str | None:
    """The dynamic-security plugin shipped with Mosquitto ≥ 2.0."""
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dynsec_password_fields(password: str, iterations: int = 101) -> dict[str, object]:
    """The ``password``/``salt``/``iterations`` of a dynsec client (PBKDF2-SHA512),
    as ``mosquitto_ctrl dynsec init`` writes them."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def _initial_dynsec(admin_password: str) -> dict[str, object]:
    """What ``mosquitto_ctrl dynsec init <file> fleetroom-admin`` creates."""
    control = "$CONTROL/dynamic-security/#"
    return {
        "clients": [{"username": ADMIN_USERNAME, "textName": "Dynsec admin user",
                     **dynsec_password_fields(admin_password),
                     "roles": [{"rolename": "admin"}]}],
        "roles": [{"rolename": "admin", "acls": [
            {"acltype": "publishClientSend", "topic": control, "allow": True},
            {"acltype": "publishClientReceive", "topic": control, "allow": True},
            {"acltype": "subscribePattern", "topic": control, "allow": True},
            {"acltype": "unsubscribePattern", "topic": "#", "allow": True}]}],
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
    }


class Mosquitto:
    """One broker process with TLS and WSS listeners (see the module docstring)."""

    def __init__(self, binary: str | None = None, plugin: str | None = None) -> None:
        binary = binary or find_mosquitto()
        plugin = plugin or find_dynsec_plugin()
        if binary is None or plugin is None:
            raise RuntimeError("mosquitto or its dynamic-security plugin is not installed "
                               "(Debian: apt-get install mosquitto mosquitto-clients)")
        self.binary, self.plugin = binary, plugin
        self._tmp = tempfile.TemporaryDirectory(prefix="fleetroom-mosquitto-")
        self.dir = Path(self._tmp.name)
        self.tls_port = _free_port()
        self.wss_port = _free_port()
        self.admin_password = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca_file, self.cert_file, self.key_file = self._certificates()
        self.dynsec_file = self.dir / "dynsec.json"
        self.dynsec_file.write_text(json.dumps(_initial_dynsec(self.admin_password), indent=1))
        self.dynsec_file.chmod(0o600)
        self.starts = 0

    # --- addresses ---------------------------------------------------------------------

    @property
    def mqtts_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.wss_port}/mqtt"

    @property
    def admin_username(self) -> str:
        return ADMIN_USERNAME

    @property
    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- files -------------------------------------------------------------------------

    def _certificates(self) -> tuple[Path, Path, Path]:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        paths = self.dir / "ca.pem", self.dir / "server.pem", self.dir / "server.key"
        ca.cert_pem.write_to_path(str(paths[0]))
        paths[1].write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(paths[2]))
        return paths

    def _write_config(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        # Mosquitto started as root drops to the user "mosquitto", who could not read
        # our temporary files; naming the current user keeps it as it is.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else ""
        conf.write_text(f"""{user}per_listener_settings false
allow_anonymous false
persistence false
log_dest file {self.dir}/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
plugin {self.plugin}
plugin_opt_config_file {self.dynsec_file}

# MQTT over TLS (8883 in production)
listener {self.tls_port} 127.0.0.1
certfile {self.cert_file}
keyfile {self.key_file}

# MQTT over WebSocket with TLS (443 in production).  Mosquitto 2.0 binds a
# WebSocket listener by interface name: "lo" keeps it on loopback.
listener {self.wss_port} lo
protocol websockets
certfile {self.cert_file}
keyfile {self.key_file}
""")
        return conf

    # --- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 20) -> Mosquitto:
        conf = self._write_config()
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + timeout
        pending = {self.tls_port, self.wss_port}
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log}")
            for port in list(pending):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        pending.discard(port)
                except OSError:
                    pass
            if pending:
                if time.monotonic() > deadline:
                    self.stop(cleanup=False)
                    raise RuntimeError(f"mosquitto did not listen on {pending}:\n{self.log}")
                time.sleep(0.05)
        return self

    def stop(self, *, cleanup: bool = True) -> None:
        stop_process(self.proc)
        self.proc = None
        if cleanup:
            self._tmp.cleanup()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without saying goodbye to anyone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, *, down_for: float = 0.0, hard: bool = True) -> None:
        """Stop (killed when ``hard``), wait ``down_for`` seconds, start on the same ports."""
        if hard:
            self.kill()
        else:
            self.stop(cleanup=False)
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- inspection --------------------------------------------------------------------

    def dynsec(self) -> dict[str, object]:
        """The plugin's saved state (clients with hashed passwords, roles, ACLs)."""
        data: dict[str, object] = json.loads(self.dynsec_file.read_text())
        return data

"""Start and drive the DOT-based OpenID Connect provider (:mod:`.serve`) from tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[3]


class OidcProvider:
    """A real OIDC provider process on 127.0.0.1 (a random free port).

    ``clients``: ``[{"client_id", "client_secret", "redirect_uris": [...]}]``.
    """

    def __init__(self, clients: list[dict[str, Any]]) -> None:
        self.clients = clients
        self._tmp = tempfile.TemporaryDirectory(prefix="fleetroom-oidc-")
        self.dir = Path(self._tmp.name)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.issuer = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.dir / "provider.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 60) -> OidcProvider:
        cfg = {"data_dir": str(self.dir), "clients": self.clients}
        (self.dir / "config.json").write_text(json.dumps(cfg))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DJANGO_", "FLEETROOM_"))}
        env["PYTHONPATH"] = str(REPO)
        log = (self.dir / "provider.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.oidc_provider.serve",
             str(self.dir / "config.json")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until ready or exit
        if not line or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"OIDC provider did not start:\n{self.log}")
        info = json.loads(line)
        self.port, self.issuer = info["port"], info["issuer"]
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self._tmp.cleanup()

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_user(self, username: str, password: str, *, email: str,
                 given_name: str = "", family_name: str = "",
                 email_verified: bool | None = True) -> None:
        """Create or change a user at the provider."""
        r = requests.post(f"{self.base_url}/_test/users", timeout=10, json={
            "username": username, "password": password, "email": email,
            "given_name": given_name, "family_name": family_name,
            "email_verified": email_verified})
        r.raise_for_status()

    def sign_in(self, authorize_url: str, username: str, password: str,
                *, session: requests.Session | None = None) -> str:
        """What a browser does at the provider: follow the authorization request to
        the login form, sign in, and return the redirect back to the client (the
        callback URL with ``code`` and ``state``), without following it."""
        s = session or requests.Session()
        url = authorize_url
        for _ in range(10):
            parts = urlsplit(url)
            if f"{parts.hostname}:{parts.port}" != f"127.0.0.1:{self.port}":
                return url  # back at the client
            r = s.get(url, allow_redirects=False, timeout=10)
            if r.status_code in (301, 302, 303):
                url = urljoin(url, r.headers["Location"])
                continue
            if r.status_code == 200 and 'name="password"' in r.text:
                nxt = re.search(r'name="next" value="([^"]*)"', r.text)
                r = s.post(url, allow_redirects=False, timeout=10, data={
                    "username": username, "password": password,
                    "csrfmiddlewaretoken": s.cookies["csrftoken"],
                    "next": (nxt.group(1) if nxt else "").replace("&amp;", "&")},
                    headers={"Referer": url})
                if r.status_code != 302:
                    raise AssertionError(f"provider login failed ({r.status_code})")
                url = urljoin(url, r.headers["Location"])
                continue
            raise AssertionError(f"unexpected provider answer {r.status_code} at {url}:\n"
                                 f"{r.text[:2000]}")
        raise AssertionError("too many redirects at the provider")

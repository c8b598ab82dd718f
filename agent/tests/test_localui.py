"""The local status page over real sockets: 127.0.0.1 only, password, lockout, no rebinding."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import httpx
import pytest
from fleetroom_agent.localui.password import (
    MAX_FAILURES,
    PASSWORD_FILE,
    PasswordError,
    load_password,
    set_password,
)
from fleetroom_agent.localui.server import StatusPage

PASSWORD = "correct horse battery"
FACTS = {"agent_id": "a-1", "queue_items": 3, "queue_bytes": 120, "running": True,
         "last_error": "<script>alert(1)</script>", "oldest_unsent_at": "2025-03-10T12:00:00+00:00",
         "outbox": {"streams": {"readings": {"items": 3, "bytes": 120}}}, "errors": []}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def page(tmp_path):
    clock = Clock()
    sp = StatusPage(tmp_path, lambda: dict(FACTS), port=0, monotonic=clock)
    await sp.start()
    task = asyncio.create_task(sp.serve_forever())
    sp.clock = clock  # type: ignore[attr-defined]
    try:
        yield sp
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def client(sp: StatusPage, password: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{sp.port}",
                             auth=("", password) if password is not None else None,
                             trust_env=False, timeout=10)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "localhost", "::1"])
def test_refuses_any_bind_address_but_loopback(tmp_path, host):
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        StatusPage(tmp_path, dict, host=host)


async def test_listens_on_loopback_only(page):
    assert page._server.sockets[0].getsockname()[0] == "127.0.0.1"
    assert len(page._server.sockets) == 1


async def test_without_a_password_nothing_is_shown(page):
    async with client(page, PASSWORD) as c:
        r = await c.get("/status.json")
    assert r.status_code == 503
    assert "set-password" in r.text
    assert "a-1" not in r.text


async def test_password_is_stored_hashed(tmp_path):
    set_password(tmp_path, PASSWORD)
    raw = (tmp_path / PASSWORD_FILE).read_text()
    assert PASSWORD not in raw
    assert json.loads(raw)["hash"].startswith("scrypt$")
    assert (tmp_path / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    stored = load_password(tmp_path)
    assert stored is not None
    assert stored.verify(PASSWORD)
    assert not stored.verify(PASSWORD + "x")
    with pytest.raises(PasswordError):
        set_password(tmp_path, "short")


async def test_right_password_shows_the_status(page):
    set_password(page.data_dir, PASSWORD)
    async with client(page, PASSWORD) as c:
        r = await c.get("/status.json")
        assert r.status_code == 200
        assert r.json() == FACTS
        assert r.headers["cache-control"] == "no-store"
        html = await c.get("/")
    assert html.status_code == 200
    assert "a-1" in html.text
    # device- or server-controlled text is escaped, scripts cannot run anyway
    assert "<script>" not in html.text
    assert "&lt;script&gt;" in html.text
    assert "script-src" not in html.headers["content-security-policy"]
    assert html.headers["x-frame-options"] == "DENY"


async def test_missing_or_wrong_password_is_401(page):
    set_password(page.data_dir, PASSWORD)
    async with client(page) as c:
        r = await c.get("/status.json")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    async with client(page, "wrong password!") as c:
        r = await c.get("/status.json")
    assert r.status_code == 401
    assert "a-1" not in r.text


async def test_lockout_after_repeated_failures(page):
    set_password(page.data_dir, PASSWORD)
    async with client(page, "wrong password!") as bad:
        for _ in range(MAX_FAILURES):
            assert (await bad.get("/status.json")).status_code == 401
        r = await bad.get("/status.json")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    # locked for everyone, even with the right password, until the lockout ends
    async with client(page, PASSWORD) as good:
        assert (await good.get("/status.json")).status_code == 429
        page.clock.t += 301
        assert (await good.get("/status.json")).status_code == 200


async def test_dns_rebinding_is_refused(page):
    set_password(page.data_dir, PASSWORD)
    async with client(page, PASSWORD) as c:
        r = await c.get("/status.json", headers={"host": f"evil.example:{page.port}"})
    assert r.status_code == 421
    assert "a-1" not in r.text
    async with httpx.AsyncClient(base_url=f"http://localhost:{page.port}", auth=("", PASSWORD),
                                 trust_env=False) as c:
        # localhost may resolve to ::1 only on some hosts; the page is IPv4 only
        with contextlib.suppress(httpx.ConnectError):
            assert (await c.get("/status.json")).status_code == 200


async def test_only_get_and_head(page):
    set_password(page.data_dir, PASSWORD)
    async with client(page, PASSWORD) as c:
        assert (await c.post("/status.json", content=b"x")).status_code == 405
        head = await c.head("/status.json")
        assert head.status_code == 200
        assert head.content == b""
        assert (await c.get("/admin")).status_code == 404


async def test_garbage_and_oversized_requests(page):
    reader, writer = await asyncio.open_connection("127.0.0.1", page.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431")
    reader, writer = await asyncio.open_connection("127.0.0.1", page.port)
    writer.write(b"\x16\x03\x01garbage\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    # and the page still answers
    set_password(page.data_dir, PASSWORD)
    async with client(page, PASSWORD) as c:
        assert (await c.get("/status.json")).status_code == 200


async def test_basic_header_garbage_counts_as_a_failure(page):
    set_password(page.data_dir, PASSWORD)
    async with client(page) as c:
        r = await c.get("/status.json", headers={"authorization": "Basic !!!notbase64"})
        assert r.status_code == 401
        ok = base64.b64encode(f"x:{PASSWORD}".encode()).decode()
        r = await c.get("/status.json", headers={"authorization": f"Basic {ok}"})
        assert r.status_code == 200
    assert len(page.throttle.failures) == 0  # success cleared the count

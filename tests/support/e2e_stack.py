"""The shared server stack of the end-to-end tests (see tests/e2e/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.e2e_server import FleetroomServer
from tests.support.mosquitto import Mosquitto, find_dynsec_plugin, find_mosquitto

IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class Stack:
    """The shared server, its broker (``None`` without Mosquitto) and the test sites."""

    server: FleetroomServer
    broker: Mosquitto | None
    sites: dict[str, int]
    base: Path
    started_in_s: float
    tokens: dict[str, Future[str]] = field(default_factory=dict)

    def token(self, site: str) -> str:
        """A one-use enrollment token for ``site`` from ``fleetroom manage agent_token``.

        Each ``fleetroom manage`` run pays Django's start-up (seconds on a busy CI
        machine), so :func:`running_stack` makes one token per site in a background
        thread while the first tests run; a site asked for twice gets a fresh one."""
        pending = self.tokens.pop(site, None)
        return pending.result() if pending is not None else \
            self.server.enrollment_token(self.sites[site])

    def ca_bundle(self, directory: Path) -> Path:
        """The server's private CA, plus the broker's when there is one: what a site
        whose HTTPS server and MQTT broker have different CAs gives ``--ca-file``
        (the agent's MQTT transport trusts the identity's CA file)."""
        bundle = directory / "ca-bundle.pem"
        parts = [self.server.ca_file.read_bytes()]
        if self.broker is not None:
            parts.append(Path(self.broker.ca_file).read_bytes())
        bundle.write_bytes(b"".join(parts))
        return bundle


def mosquitto_available() -> bool:
    """Mosquitto ≥ 2 with its dynamic-security plugin (what the MQTT transport needs)."""
    return find_mosquitto() is not None and find_dynsec_plugin() is not None


@contextlib.contextmanager
def running_stack(base: Path, sites: Sequence[str], *,
                  second_dealer: Sequence[str] = ()) -> Iterator[Stack]:
    """Broker (if installed), then ``fleetroom serve`` configured for it and for its
    SMTP intake, then one site per name (those in ``second_dealer`` under another
    dealer); everything stopped on exit."""
    t0 = time.monotonic()
    with contextlib.ExitStack() as exits:
        broker = exits.enter_context(Mosquitto()) if mosquitto_available() else None
        server = FleetroomServer(base, broker=broker, mail_intake=True)
        exits.callback(server.stop)
        server.start()
        made = server.create_sites(sites, second_dealer=second_dealer)
        pool = exits.enter_context(ThreadPoolExecutor(1, thread_name_prefix="e2e-tokens"))
        exits.callback(pool.shutdown, cancel_futures=True)
        tokens = {name: pool.submit(server.enrollment_token, made[name]) for name in sites}
        yield Stack(server, broker, made, base, time.monotonic() - t0, tokens)


def need_broker(stack: Stack) -> Mosquitto:
    """The broker, or skip (fail in CI, where Mosquitto is installed)."""
    if stack.broker is None:
        if IN_CI:
            pytest.fail("mosquitto with the dynamic-security plugin is required in CI")
        pytest.skip("mosquitto (with mosquitto_dynamic_security.so) is not installed")
    return stack.broker

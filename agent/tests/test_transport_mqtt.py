"""MqttTransport without a broker: what it refuses up front and how it fails.

The exchanges through a real Mosquitto (mqtts and wss, isolation between agents,
broker restarts, pushes) are in tests/e2e/test_mqtt_transport.py and
server/tests/test_agents_mqtt.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import pytest
from fleetroom_agent.transports.base import Transport, TransportError
from fleetroom_agent.transports.mqtt import MqttTransport
from fleetroom_protocol.envelope import SERVER, seal
from fleetroom_protocol.messages import MqttSettings, PollBody, topic_down, topic_up
from nacl.signing import SigningKey

AGENT = "3f1c0c1e-0000-4000-8000-000000000001"


def settings(url: str) -> MqttSettings:
    return MqttSettings(url=url, username=AGENT, password="p" * 43, topic_up=topic_up(AGENT),
                        topic_down=topic_down(AGENT))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url", ["mqtt://broker:1883", "ws://broker/mqtt", "https://broker/",
                                 "mqtts://"])
def test_only_tls_urls_are_accepted(url):
    with pytest.raises(ValueError, match="TLS is required"):
        MqttTransport(settings(url))


def test_it_is_a_transport_and_needs_credentials_from_enrollment():
    transport = MqttTransport(settings("wss://broker.example.com/mqtt"))
    assert isinstance(transport, Transport)
    assert transport.name == "mqtt"
    with pytest.raises(ValueError, match="without MQTT credentials"):
        MqttTransport.from_identity(SimpleNamespace(mqtt=None, ca_file=None))


async def test_a_non_envelope_is_refused_before_anything_is_sent():
    transport = MqttTransport(settings(f"mqtts://127.0.0.1:{closed_port()}"))
    try:
        with pytest.raises(TransportError) as info:
            await transport.exchange(b"hello")
    finally:
        await transport.aclose()
    assert info.value.code == "protocol"
    assert transport.connections == 0


async def test_unreachable_broker_fails_the_exchange_at_once():
    port = closed_port()
    transport = MqttTransport(settings(f"mqtts://127.0.0.1:{port}"), connect_timeout_s=15)
    envelope = seal(PollBody(), signing_key=SigningKey.generate(), sender=AGENT, to=SERVER,
                    ctr=1, kind="poll")
    started = time.monotonic()
    try:
        with pytest.raises(TransportError) as info:
            await transport.exchange(envelope)
        assert time.monotonic() - started < 5  # the refused connect, not the timeout
        assert info.value.code == "network"
        assert f"127.0.0.1:{port}" in info.value.message
        assert not transport.connected
        assert transport.last_error is not None
        # A second exchange triggers a fresh attempt instead of sitting out the back-off.
        started = time.monotonic()
        with pytest.raises(TransportError):
            await transport.exchange(envelope)
        assert time.monotonic() - started < 5
    finally:
        await transport.aclose()
    with pytest.raises(TransportError):
        await asyncio.wait_for(transport.exchange(envelope), 5)

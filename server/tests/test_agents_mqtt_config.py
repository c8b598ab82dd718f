"""The [mqtt] section: strict validation, environment names, secrets kept out of
messages, and the MQTT hooks doing nothing while MQTT is not configured."""

from __future__ import annotations

import pytest
from fleetroom import config
from fleetroom.agents.mqtt_bridge import agent_of_topic, push_command
from fleetroom.agents.mqtt_broker import parse_url, provision_agent, revoke_agent
from fleetroom.config import MqttConfig
from fleetroom_protocol.messages import topic_down, topic_up


def _load(tmp_path, **env: str) -> config.Config:
    return config.load({"FLEETROOM_DATA_DIR": str(tmp_path), "FLEETROOM_SECRET_KEY": "s" * 60,
                        **env})


def test_mqtt_is_off_by_default_and_in_the_starter_file(tmp_path):
    (tmp_path / config.CONFIG_FILE).write_text(config.starter_toml(), encoding="utf-8")
    cfg = config.load({"FLEETROOM_DATA_DIR": str(tmp_path)})
    assert "[mqtt]" in config.starter_toml()
    assert (cfg.mqtt.enabled, cfg.mqtt.url, cfg.mqtt.protocol) == (False, None, "5")


def test_environment_configures_the_broker_and_hides_the_secrets(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here\n")
    cfg = _load(tmp_path, FLEETROOM_MQTT_URL="mqtts://mqtt.example.com:8883",
                FLEETROOM_MQTT_AGENT_URL="wss://mqtt.example.com/mqtt",
                FLEETROOM_MQTT_CA_FILE=str(ca), FLEETROOM_MQTT_PROTOCOL="3.1.1",
                FLEETROOM_MQTT_BRIDGE_PASSWORD="bridge-pw-123",
                FLEETROOM_MQTT_ADMIN_PASSWORD="admin-pw-456").mqtt
    assert cfg.enabled
    assert (cfg.url, cfg.agent_url, cfg.ca_file, cfg.protocol) == (
        "mqtts://mqtt.example.com:8883", "wss://mqtt.example.com/mqtt", ca, "3.1.1")
    assert cfg.bridge_password.get_secret_value() == "bridge-pw-123"
    assert "bridge-pw-123" not in repr(cfg)
    assert "admin-pw-456" not in repr(cfg)


@pytest.mark.parametrize(("env", "fragment"), [
    ({"FLEETROOM_MQTT_URL": "mqtts://b:8883"}, "bridge_password"),
    ({"FLEETROOM_MQTT_URL": "mqtts://b:8883", "FLEETROOM_MQTT_BRIDGE_PASSWORD": "x"},
     "admin_password"),
    ({"FLEETROOM_MQTT_URL": "mqtt://broker.example.com:1883"}, "mqtt:// has no TLS"),
    ({"FLEETROOM_MQTT_AGENT_URL": "mqtt://127.0.0.1:1883"}, "mqtt:// has no TLS"),
    ({"FLEETROOM_MQTT_URL": "http://b/"}, "must look like mqtts://"),
    ({"FLEETROOM_MQTT_PROTOCOL": "4"}, "mqtt.protocol"),
    ({"FLEETROOM_MQTT_CA_FILE": "/nonexistent/ca.pem"}, "does not exist"),
    ({"FLEETROOM_MQTT_SHARED_GROUP": "a/b"}, "mqtt.shared_group"),
    ({"FLEETROOM_MQTT_TYPO": "1"}, "unknown environment variable FLEETROOM_MQTT_TYPO"),
])
def test_bad_mqtt_settings_stop_start_up_with_a_clear_message(tmp_path, env, fragment):
    with pytest.raises(config.ConfigError) as info:
        _load(tmp_path, **env)
    assert fragment in str(info.value)
    assert "admin-pw" not in str(info.value)


def test_plain_mqtt_only_to_a_broker_on_this_machine():
    cfg = MqttConfig(url="mqtt://127.0.0.1:1883", bridge_password="b",  # type: ignore[arg-type]
                     admin_password="a")  # type: ignore[arg-type]
    address = parse_url(cfg.url or "")
    assert (address.scheme, address.host, address.port, address.tls) == (
        "mqtt", "127.0.0.1", 1883, False)
    wss = parse_url("wss://mqtt.example.com/mqtt")
    assert (wss.port, wss.path, wss.transport, wss.tls) == (443, "/mqtt", "websockets", True)
    assert parse_url("mqtts://h").port == 8883


def test_hooks_do_nothing_while_mqtt_is_off():
    off = MqttConfig()
    assert provision_agent("3f1c0c1e-0000-4000-8000-000000000001", config=off) is None
    assert revoke_agent("3f1c0c1e-0000-4000-8000-000000000001", config=off) is False
    assert push_command("3f1c0c1e-0000-4000-8000-000000000001", b"x", config=off) is False


def test_agent_ids_that_could_widen_a_topic_are_refused():
    on = MqttConfig(url="mqtts://b:8883", bridge_password="b",  # type: ignore[arg-type]
                    admin_password="a")  # type: ignore[arg-type]
    for bad in ("a/b", "+", "#", "", "x" * 65, "a b"):
        with pytest.raises(ValueError, match="agent id"):
            provision_agent(bad, config=on)
    agent = "3f1c0c1e-0000-4000-8000-000000000001"
    assert agent_of_topic(topic_up(agent)) == agent
    assert agent_of_topic(topic_down(agent)) is None
    assert agent_of_topic("fleetroom/v1/agents/a/b/up") is None

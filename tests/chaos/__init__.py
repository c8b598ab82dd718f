"""Chaos tests with a ground truth (issue 4): kill -9 of agent and server, a 72-hour
outage, a full disk, a corrupt outbox — nothing committed may be lost or duplicated.

The broker-restart case is covered where the MQTT transport is tested, with the same
kind of ground truth (every committed item reaches the server exactly once by key and
payload while the broker is killed and restarted mid-delivery):
``tests/e2e/test_mqtt_transport.py::test_broker_restart_mid_delivery_loses_nothing``.
"""

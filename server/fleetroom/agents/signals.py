"""Hooks for the other agent transports and for notifications.

All are sent **after commit** (so a receiver never sees a change that was rolled
back), with ``sender=Agent`` (or ``SecurityEvent``).  Receivers must not raise;
an exception is logged and the others still run (``send_robust``).

* :data:`enroll_extras` — during enrollment, *inside* the transaction (the one
  exception): each receiver may return ``{"mqtt": MqttSettings}`` and/or
  ``{"mail_to": "intake@…"}`` for the new agent, merged into the
  ``EnrollResponse``.  The MQTT bridge creates the agent's broker account here.
  Raising aborts the enrollment (nothing half-made).
* :data:`agent_changed` — ``agent``, ``change`` (``enrolled``, ``reenrolled``,
  ``suspended``, ``unsuspended``, ``revoked``): e.g. drop or rotate broker
  credentials.
* :data:`command_issued` — ``command``: push it now (MQTT) instead of waiting for
  the agent's next request.
* :data:`security_event` — ``event``: notify someone.
* :data:`agent_silent` — ``agent``: it stopped reporting (periodic check).
"""

from __future__ import annotations

from django.dispatch import Signal

enroll_extras = Signal()
agent_changed = Signal()
command_issued = Signal()
security_event = Signal()
agent_silent = Signal()

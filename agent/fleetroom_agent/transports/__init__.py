"""Agent → server transports: one folder per way out, all carrying the same envelope.

:mod:`.base` has the :class:`Transport` protocol every transport implements;
:mod:`.https` is the default.  MQTT and e-mail live next to it.
"""

from fleetroom_agent.transports.base import ErrorCode, Transport, TransportError

__all__ = ["ErrorCode", "Transport", "TransportError"]

"""What every transport (HTTPS, MQTT, e-mail) offers the sender.

A transport moves one sealed envelope to the server and, if it can, brings the
server's sealed reply back.  It does not interpret either: signing, verifying,
acknowledging and retrying are the sender's job, so every transport gets the
same guarantees from one place and a transport cannot ack anything by mistake.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

ErrorCode = Literal["network", "timeout", "tls", "pin", "http", "busy", "protocol",
                    "config"]


class TransportError(Exception):
    """One exchange failed; nothing is acknowledged, the sender will retry.

    ``retry_after``: seconds the server asked us to wait (429/503 ``Retry-After``);
    the sender never retries sooner.  ``code`` classifies the failure for status
    output and tests: ``network`` (refused, unreachable, reset), ``timeout``,
    ``tls`` (handshake or certificate), ``pin`` (certificate pin mismatch),
    ``http`` (unexpected HTTP status), ``busy`` (429/503), ``protocol`` (not the
    answer the protocol expects), ``config``.  ``status`` is the HTTP-like status
    when there was one; ``reply`` carries a sealed envelope the server sent with
    an error status (e.g. "suspended"), for the sender to verify and act on.
    """

    def __init__(self, message: str, retry_after: float | None = None, *,
                 code: ErrorCode = "network", status: int | None = None,
                 reply: bytes | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.code: ErrorCode = code
        self.status = status
        self.reply = reply


@runtime_checkable
class Transport(Protocol):
    """One way to reach the server.  ``name`` appears in status output and in
    ``AgentState.transport`` ("https", "mqtt", "email", …)."""

    name: str

    async def exchange(self, envelope: bytes) -> bytes | None:
        """Deliver ``envelope``; return the reply envelope, or ``None`` when the
        transport is one-way (e-mail): then the acknowledgement arrives later, via
        :meth:`fleetroom_agent.sender.Sender.accept_push` or a later exchange.

        Raise :class:`TransportError` on any failure.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the transport is not used afterwards."""
        ...

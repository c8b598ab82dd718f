"""Anti-replay by counter window (as IPsec/DTLS do), independent of any clock.

The receiver keeps the highest counter seen and a bitmap of the ``WINDOW``
counters below it.  A counter is new when it is above the highest, or inside the
window and not yet marked.  A window instead of "strictly increasing" lets
messages overtake each other (e-mail does, and a retry on another transport may)
without being mistaken for replays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

WINDOW: Final = 4096
_MASK: Final = (1 << WINDOW) - 1

Verdict = Literal["new", "replayed", "too-old"]


@dataclass(frozen=True, slots=True)
class ReplayState:
    """Highest counter accepted (``-1``: none yet) and the bitmap below it.

    Bit ``i`` of ``seen`` set means counter ``highest - i`` was accepted.
    ``to_text``/``from_text`` store it in one database column.
    """

    highest: int = -1
    seen: int = 0

    def check(self, ctr: int) -> tuple[Verdict, ReplayState]:
        """The verdict for ``ctr`` and the state to store if it is accepted."""
        if ctr > self.highest:
            shift = ctr - self.highest
            seen = ((self.seen << shift) | 1) & _MASK if shift < WINDOW else 1
            return "new", ReplayState(ctr, seen)
        offset = self.highest - ctr
        if offset >= WINDOW:
            return "too-old", self
        if self.seen >> offset & 1:
            return "replayed", self
        return "new", ReplayState(self.highest, self.seen | (1 << offset))

    def to_text(self) -> str:
        """``"<highest>:<hex bitmap>"``."""
        return f"{self.highest}:{self.seen:x}"

    @classmethod
    def from_text(cls, text: str) -> ReplayState:
        """Inverse of :meth:`to_text`; an empty string is the initial state."""
        if not text:
            return cls()
        highest, _, seen = text.partition(":")
        return cls(int(highest), int(seen or "0", 16) & _MASK)
